"""Decoded JSON records → Arrow columns for one table, following the type rule.

The rule itself is in loader/schema.py. This module is the hot path of the loader:
values are gathered into one Python list per column and each list becomes an Arrow
array with a single ``pa.array`` call. Per-value Python work is done only for columns
whose values need checking (mixed types, a time that is not a plain integer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from tdedge.loader.schema import (
    NATIVE,
    TIME,
    TIME_MAX,
    TIME_MIN,
    VALUE_TYPES,
    ColumnType,
    column_type,
    convert,
    fits,
    fold,
    unix_time,
    usable_name,
    value_type,
)
from tdedge.names import CONFLICTS, RECORD_ID

ARROW_TYPES: dict[str, pa.DataType] = {
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
}

_encode = msgspec.json.Encoder().encode
_NONE = type(None)

# Per row, the values that did not fit: {original key: value}; None for clean rows.
Conflicts = list[dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """One table's rows as Arrow columns: ``time`` first, ``td_type_conflicts`` if any."""

    table: pa.Table
    conflicts: int  # values moved to td_type_conflicts


def to_columns(
    records: Sequence[dict[str, Any]],
    received_s: Sequence[int],
    existing: Mapping[str, str] | None,
    ids: Sequence[str] | None = None,
) -> RecordColumns:
    """Build the rows of ``records`` for a table whose columns are ``existing``.

    ``received_s`` is each record's arrival time (unix seconds), used when its own
    ``time`` is missing or invalid. ``existing`` is None for a table not created yet.
    ``ids`` is tdedge's id of each record ("" for none), for the ``_tdedge_id`` column:
    never taken from a record, where a ``_tdedge_…`` key is unusable like any other
    (loader/schema.py), so no client can write it.
    """
    current = {fold(k): v for k, v in (existing or {}).items()}
    conflicts: Conflicts = [None] * len(records)
    names: list[str] = [TIME]
    arrays: list[pa.Array] = []
    time_values: list[Any] | None = None
    time_keys: str | list[str] = TIME
    for name, keys in _group(_gather(records)).items():
        if not usable_name(name):
            for key, values in keys.items():
                _spill(values, key, conflicts)
            continue
        values, row_keys = _merge(keys, records, conflicts)
        if name == TIME:
            time_values, time_keys = values, row_keys
            continue
        array = _column(values, current.get(name), row_keys, conflicts)
        if array is not None:
            names.append(name)
            arrays.append(array)
    arrays.insert(0, _time(time_values, time_keys, received_s, conflicts))
    if ids is not None:
        names.append(RECORD_ID)
        arrays.append(pa.array([i or None for i in ids], pa.string()))
    moved = sum(len(c) for c in conflicts if c is not None)
    if moved:
        names.append(CONFLICTS)
        encoded = [None if c is None else _encode(c).decode() for c in conflicts]
        arrays.append(pa.array(encoded, pa.string()))
    return RecordColumns(pa.Table.from_arrays(arrays, names=names), moved)


def _gather(records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """One list per original key, None where a record lacks the key or holds null."""
    n = len(records)
    columns: dict[str, list[Any]] = {}
    for i, record in enumerate(records):
        for key, value in record.items():
            if value is None:
                continue
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * n
            column[i] = value
    return columns


def _group(columns: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """Original keys grouped by their folded name, in order of first appearance."""
    groups: dict[str, dict[str, list[Any]]] = {}
    for key, values in columns.items():
        groups.setdefault(fold(key), {})[key] = values
    return groups


def _merge(
    keys: dict[str, list[Any]], records: Sequence[dict[str, Any]], conflicts: Conflicts
) -> tuple[list[Any], str | list[str]]:
    """One column from keys that fold alike; per row, the first key in the record wins.

    Returns the values and the original key of each (one key for the common case).
    """
    if len(keys) == 1:
        ((key, only),) = keys.items()
        return only, key
    # Rare (a batch spells a key two ways): walk the records to see which came first.
    merged: list[Any] = [None] * len(records)
    row_keys = [""] * len(records)
    for i, record in enumerate(records):
        taken = False
        for key, value in record.items():
            if value is None or key not in keys:
                continue
            if taken:
                _conflict(conflicts, i, key, value)
            else:
                merged[i], row_keys[i] = value, key
                taken = True
    return merged, row_keys


def _column(
    values: list[Any], current: str | None, keys: str | list[str], conflicts: Conflicts
) -> pa.Array | None:
    """The Arrow array for one column; None when nothing lands in it (all null)."""
    first = next((v for v in values if v is not None), None)
    if first is None:
        return None
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    first_kind = value_type(first)
    assert first_kind is not None  # first is not None
    asked: list[ColumnType] = [first_kind, *(VALUE_TYPES[k] for k in kinds)]
    kind = column_type(current, asked)
    arrow = ARROW_TYPES.get(kind or "")
    if arrow is None:
        # A column tdedge did not create, of a type it does not write: keep the values.
        _spill(values, keys, conflicts)
        return None
    assert kind is not None
    if kinds <= NATIVE[kind]:
        try:
            return pa.array(values, arrow)
        except (OverflowError, pa.ArrowInvalid):
            pass  # an integer outside int64: sort it out value by value below
    checked = _checked(values, kind, keys, conflicts)
    if checked.count(None) == len(checked):
        return None  # nothing fitted: the table's column (it exists) stays NULL
    return pa.array(checked, arrow)


def _checked(
    values: list[Any], kind: str, keys: str | list[str], conflicts: Conflicts
) -> list[Any]:
    out: list[Any] = [None] * len(values)
    for i, value in enumerate(values):
        if value is None:
            continue
        if fits(value, kind):
            out[i] = convert(value, kind)
            if kind == "DOUBLE" and type(value) is int and out[i] != value:
                # Past 2**53 a DOUBLE rounds: the column holds the nearest double and
                # td_type_conflicts the integer as it was sent.
                _conflict(conflicts, i, keys if isinstance(keys, str) else keys[i], value)
        else:
            _conflict(conflicts, i, keys if isinstance(keys, str) else keys[i], value)
    return out


def _time(
    values: list[Any] | None,
    keys: str | list[str],
    received_s: Sequence[int],
    conflicts: Conflicts,
) -> pa.Array:
    if values is None:
        return pa.array(received_s, pa.int64())
    kinds = set(map(type, values))
    if kinds == {int} and min(values) >= TIME_MIN and max(values) < TIME_MAX:
        return pa.array(values, pa.int64())
    out = list(received_s)
    for i, value in enumerate(values):
        if value is None:
            continue
        seconds = unix_time(value)
        if seconds is None:
            _conflict(conflicts, i, keys if isinstance(keys, str) else keys[i], value)
        else:
            out[i] = seconds
    return pa.array(out, pa.int64())


def _spill(values: list[Any], keys: str | list[str], conflicts: Conflicts) -> None:
    """Every value of a column that cannot exist goes to td_type_conflicts."""
    for i, value in enumerate(values):
        if value is not None:
            _conflict(conflicts, i, keys if isinstance(keys, str) else keys[i], value)


def _conflict(conflicts: Conflicts, row: int, key: str, value: Any) -> None:
    found = conflicts[row]
    if found is None:
        conflicts[row] = {key: value}
    else:
        found[key] = value
