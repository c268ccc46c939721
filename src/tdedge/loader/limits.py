"""How many columns a table may have, and which records would pass that.

DuckLake keeps small commits in the lake's SQLite catalog, in one SQLite table per
table (and schema version) with a column per table column plus three of its own, and
SQLite refuses a table of more than 2,000 columns — at commit time. So one record with
~2,000 keys, or two of 1,000 different keys, once made every commit fail.
``Settings.max_table_columns`` bounds a table's columns, ``time`` included and
``td_type_conflicts`` (tdedge's own, at most one) not:

- at the doors, a record that alone needs more columns than that is refused
  (``columns_refusal`` on its JSON text or its decoded object);
- at load time, a record that would take its table past the limit with new columns is
  refused (``too_wide``), with reason ``too_many_columns``; the table's other rows load.

A record's columns are what the type rule makes of it (loader/schema.py): its keys that
can be columns, folded to lower case, that hold a value (a null makes no column), and
``time``. The doors add their own columns (``_tdedge_id``, ``td_ip``, …) to the count.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import msgspec

from tdedge.loader.schema import TIME, fold, usable_name
from tdedge.names import CONFLICTS

TOO_MANY_COLUMNS = "too_many_columns"

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def record_columns(record: Mapping[str, Any], added: Collection[str] = ()) -> set[str]:
    """The column names ``record`` alone needs, with ``added`` (the door's own columns)."""
    return set(_column_names(record, added))


def _column_names(record: Mapping[str, Any], added: Collection[str]) -> Iterator[str]:
    yield TIME
    yield from added
    for key, value in record.items():
        if value is None:
            continue
        name = fold(key)
        if usable_name(name):
            yield name


def columns_refusal(
    record: bytes | Mapping[str, Any], limit: int, added: Collection[str] = ()
) -> str | None:
    """Why a record alone needs more than ``limit`` columns, or None when it fits.

    ``record`` is a JSON object's text or the object. The usual record is decided
    without decoding or walking it: a JSON object has fewer keys than ``:`` bytes, and
    an object no more columns than keys.
    """
    room = limit - 1 - len(added)  # time, and the door's own columns
    if isinstance(record, bytes):
        if record.count(b":") <= room:
            return None
        try:
            record = _decode(record)
        except msgspec.DecodeError:
            return None  # not this check's business: the loader sorts it out
    if len(record) <= room:
        return None
    # Counted only until past the limit: a refusal must not cost more than the record.
    names: set[str] = set()
    for name in _column_names(record, added):
        names.add(name)
        if len(names) > limit:
            return (
                f"the record needs more than {limit} columns; a table holds at most "
                f"{limit} (max_table_columns)"
            )
    return None


def too_wide(
    records: Sequence[Mapping[str, Any]],
    existing: Collection[str] | None,
    limit: int,
    added: Collection[str] = (),
) -> list[int]:
    """Indexes of the records that would take a table past ``limit`` columns.

    ``existing`` is the table's columns (None for a new table), ``added`` the columns
    the loader adds to these records itself (``_tdedge_id``). Records are taken in
    order: one that fits adds its columns, one that does not is refused and adds none.
    The usual batch is decided with one set of the keys it holds.
    """
    known = {fold(c) for c in existing or ()}
    known.discard(CONFLICTS)
    known.add(TIME)
    known.update(added)
    keys: set[str] = set()
    for record in records:
        keys.update(record)
    if len(known) + len(keys) <= limit or len(known | {fold(k) for k in keys}) <= limit:
        return []
    refused: list[int] = []
    for i, record in enumerate(records):
        new = record_columns(record) - known
        if len(known) + len(new) > limit:
            refused.append(i)
        else:
            known |= new
    return refused
