"""How JSON values become typed columns: the type rule tdedge applies to every record.

Names
  Keys are folded to lower case (DuckDB identifiers are case-insensitive), so ``Name``
  and ``name`` are one column. When a record has two keys that fold to the same name,
  the first key in the record keeps the column and the others go to
  ``td_type_conflicts``. A key that is empty, longer than 255 characters, holds a
  control character, folds to ``td_type_conflicts``, starts with ``_tdedge_``
  (tdedge's own columns, see ``RESERVED_PREFIX``) or with ``_ducklake_internal_``
  (DuckLake reserves those) cannot be a column: its value goes to
  ``td_type_conflicts`` too.

Types of JSON values
  integer → BIGINT, float → DOUBLE, string → VARCHAR, true/false → BOOLEAN,
  array/object → VARCHAR holding the compact JSON text, null → NULL. A null counts as
  absent: a column is never created for a key whose values are all null. An integer
  outside the signed 64-bit range is typed VARCHAR (its exact digits), never rounded.

A column's type
  A new column takes the type of the first non-null value seen for it (in journal
  order), except that a BIGINT column seeing a float widens to DOUBLE — in the same
  batch or a later one; DuckLake allows no other change of type. So the outcome does
  not depend on how records happen to be batched.

Values that do not fit
  BIGINT takes integers of the 64-bit range; DOUBLE takes those and floats; BOOLEAN
  takes only true/false; VARCHAR takes everything (non-strings as their JSON text,
  so ``1`` becomes ``"1"``). Any other value — a string for a BIGINT column, a number
  for a BOOLEAN one — is never dropped: the row gets NULL in that column and the
  original value is kept in the VARCHAR column ``td_type_conflicts``, a JSON object
  {original key: original value}.

Integers in a DOUBLE column
  A DOUBLE holds integers exactly up to 2**53. An integer it would round (a larger one
  sent to a DOUBLE column, or one stored before its column widened from BIGINT) keeps
  the nearest double in the column and the exact integer in ``td_type_conflicts``: under
  its original key, or under the column's name for rows stored before the widening
  (lake/lake.py records those in the same transaction as the widening).

time
  ``time`` is always BIGINT unix seconds. The record's own ``time`` is used when it is
  an integer — or a float or a string holding an integer number, such as ``1.7e9`` or
  ``"1700000000"`` — between 0 (1970) and 4102444800 (2100, exclusive; milliseconds
  sent by mistake fall outside). Otherwise the row gets the arrival time at the edge
  (``received_ms // 1000``) and an invalid original is kept in ``td_type_conflicts``
  under its key.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

from tdedge.names import CONFLICTS, RESERVED_PREFIX

ColumnType = Literal["BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN"]

TIME: Final = "time"
MAX_NAME_LENGTH: Final = 255
# DuckLake refuses columns with this prefix while data inlining is on.
DUCKLAKE_PREFIX: Final = "_ducklake_internal_"

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
TIME_MIN: Final = 0
TIME_MAX: Final = 4_102_444_800  # 2100-01-01T00:00:00Z, exclusive

# Python types msgspec decodes JSON into, and the column type each one asks for.
VALUE_TYPES: Final[dict[type, ColumnType]] = {
    int: "BIGINT",
    float: "DOUBLE",
    str: "VARCHAR",
    bool: "BOOLEAN",
    list: "VARCHAR",
    dict: "VARCHAR",
}

# Python types a column takes without conversion or range checks (the fast path).
NATIVE: Final[dict[str, frozenset[type]]] = {
    "BIGINT": frozenset({int}),
    "DOUBLE": frozenset({float}),
    "VARCHAR": frozenset({str}),
    "BOOLEAN": frozenset({bool}),
}

_encode = msgspec.json.Encoder().encode


def fold(key: str) -> str:
    return key.lower()


# Control characters cannot be in a column's name (one regex search: a door checks up
# to thousands of keys per record).
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def usable_name(name: str) -> bool:
    """Whether a folded key can name a column (see the module docstring)."""
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and name != CONFLICTS
        and not name.startswith((RESERVED_PREFIX, DUCKLAKE_PREFIX))
        and _CONTROL.search(name) is None
    )


def in_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def value_type(value: Any) -> ColumnType | None:
    """The column type a JSON value asks for; None for null."""
    if value is None:
        return None
    kind = type(value)
    if kind is int and not in_int64(value):
        return "VARCHAR"
    return VALUE_TYPES[kind]


def widened(current: str, seen: ColumnType) -> str:
    """The evolution rule: the type a column of ``current`` type has after seeing ``seen``."""
    if current == "BIGINT" and seen == "DOUBLE":
        return "DOUBLE"
    return current


def column_type(current: str | None, kinds: list[ColumnType]) -> str | None:
    """A column's type after a batch whose values ask for ``kinds`` (in order of appearance).

    ``current`` is the type in the lake (None for a new column). A column may also hold
    a type tdedge does not create (made by hand); it never changes.
    """
    result = current
    for kind in kinds:
        result = kind if result is None else widened(result, kind)
    return result


def fits(value: Any, column: str) -> bool:
    """Whether a non-null value can be stored in a column of type ``column``."""
    kind = type(value)
    if column == "VARCHAR":
        return True
    if column == "BIGINT":
        return kind is int and in_int64(value)
    if column == "DOUBLE":
        return kind is float or (kind is int and in_int64(value))
    if column == "BOOLEAN":
        return kind is bool
    return False


def convert(value: Any, column: str) -> Any:
    """A value that ``fits`` the column, as the Python object its Arrow column holds."""
    if column == "VARCHAR" and type(value) is not str:
        return _encode(value).decode()
    if column == "DOUBLE":
        return float(value)
    return value


def unix_time(value: Any) -> int | None:
    """The record's ``time`` as unix seconds, or None when it is not a valid one."""
    kind = type(value)
    if kind is int:
        seconds = value
    elif kind is float and value.is_integer():
        seconds = int(value)
    elif kind is str:
        seconds = _integer_text(value)
        if seconds is None:
            return None
    else:
        return None
    return seconds if TIME_MIN <= seconds < TIME_MAX else None


# Longer strings are no plausible time, and int() refuses over 4,300 digits anyway.
_MAX_TIME_TEXT = 32


def _integer_text(text: str) -> int | None:
    stripped = text.strip()
    if len(stripped) > _MAX_TIME_TEXT:
        return None
    if stripped.isascii() and stripped.isdigit():
        return int(stripped)
    try:
        number = float(stripped)
    except ValueError:
        return None
    # float("nan"/"inf") parse but are not a number of seconds.
    return int(number) if number.is_integer() else None
