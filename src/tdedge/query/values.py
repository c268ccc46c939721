"""A job's result values as Presto's client protocol carries them, from DuckDB's Arrow.

Numbers, strings, booleans and null stay as they are; arrays stay arrays, maps become
objects and rows (structs) objects by field name. What JSON and msgpack have no type
for becomes the text Presto prints: timestamps with milliseconds (``2024-01-02
03:04:05.678``, a zone-aware one followed by its zone: ``… UTC``), dates, times,
decimals, intervals (``1 02:03:04.000`` days to seconds, ``1-2`` years to months).
Integers beyond 64 bits (DuckDB's HUGEINT sums) stay integers while they fit, else
their digits. Every type DuckDB can return has a value here, never an error: a job
whose rows were computed must not fail for writing them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1


def arrow_rows(batch: pa.RecordBatch) -> list[list[Any]]:
    """The batch's rows as lists of msgpack/JSON-ready values."""
    columns = [column_values(col) for col in batch.columns]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def column_values(col: pa.Array) -> list[Any]:
    kind = col.type
    if not _special(kind):
        return list(col.to_pylist())
    if pa.types.is_timestamp(kind):
        fast = _timestamps(col)
        if fast is not None:
            return fast
    elif pa.types.is_date(kind) or (pa.types.is_decimal(kind) and kind.scale > 0):
        return list(col.cast(pa.string()).to_pylist())
    return [_value(v, kind) for v in col.to_pylist()]


def _timestamps(col: pa.Array) -> list[Any] | None:
    """Timestamps through Arrow (a million a second); None when some value is out of
    the range it formats (DuckDB's infinity), for the value-by-value path."""
    kind = col.type
    try:
        # Presto's timestamps have milliseconds: finer digits are cut, not rounded.
        ms = pc.cast(col, pa.timestamp("ms", kind.tz), safe=False)
        text = pc.strftime(ms, format="%Y-%m-%d %H:%M:%S")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return None
    if kind.tz:
        text = pc.binary_join_element_wise(text, f" {_zone(kind.tz)}", "")
    return list(text.to_pylist())


def _special(kind: pa.DataType) -> bool:
    """Whether values of ``kind`` (or of a type inside it) need converting."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _special(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_special(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_dictionary(kind):
        return _special(kind.value_type)
    if pa.types.is_union(kind):
        return any(_special(kind.field(i).type) for i in range(kind.num_fields))
    return not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_null(kind)
    )


def _value(value: Any, kind: pa.DataType) -> Any:
    """One Python value (as Arrow's to_pylist gives it) of Arrow type ``kind``."""
    if value is None:
        return None
    if pa.types.is_map(kind):
        return {_key(_value(k, kind.key_type)): _value(v, kind.item_type) for k, v in value}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_value(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        types = {kind.field(i).name: kind.field(i).type for i in range(kind.num_fields)}
        return {name: _value(v, types.get(name, pa.null())) for name, v in value.items()}
    if pa.types.is_dictionary(kind):
        return _value(value, kind.value_type)
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= UINT64_MAX else str(value)
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
        if value.tzinfo is None:
            return text
        return f"{text} {_zone(str(value.tzinfo))}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent == 0:
            return _scalar(int(value))
        return str(value)
    if isinstance(value, dt.timedelta):
        return _day_seconds(value.days, value.seconds * 1_000_000 + value.microseconds)
    if isinstance(value, pa.MonthDayNano):
        months, days, nanos = value.months, value.days, value.nanoseconds
        if months and not days and not nanos:
            return (
                f"{months // 12}-{months % 12}"
                if months >= 0
                else f"-{-months // 12}-{-months % 12}"
            )
        text = _day_seconds(days, nanos // 1000)
        return f"{months} months {text}" if months else text
    if isinstance(value, dict | list | tuple):
        return str(value)
    return str(value)


def _day_seconds(days: int, micros: int) -> str:
    """Presto's ``interval day to second`` text: ``D HH:MM:SS.mmm``."""
    total = days * 86_400_000_000 + micros
    sign = "-" if total < 0 else ""
    total = abs(total)
    d, rest = divmod(total, 86_400_000_000)
    h, rest = divmod(rest, 3_600_000_000)
    m, rest = divmod(rest, 60_000_000)
    s, us = divmod(rest, 1_000_000)
    return f"{sign}{d} {h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}"


def _zone(name: str) -> str:
    """The zone as Presto names it after a timestamp (UTC for DuckDB's +00:00)."""
    return "UTC" if name in {"+00:00", "UTC", "Etc/UTC", "utc"} else name


def _key(key: Any) -> Any:
    """A map key as msgpack and JSON objects take it."""
    return key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)
