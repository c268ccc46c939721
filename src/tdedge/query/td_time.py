"""Treasure Data's time functions as pure Python: the reference the SQL rewrite follows.

Every function takes the time it needs (``scheduled``) as an argument and never reads
the clock. Times are unix seconds. ``zone`` arguments accept what TD accepts
(query/timezones.py). The translator (query/translate.py) turns calls with constant
arguments into plain SQL built from these results; the Python UDFs
(query/functions.py) run these functions for the rest.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tdedge.query.joda import format_datetime
from tdedge.query.timezones import Zone, resolve

_TIME_STRING = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{1,2}(?::?\d{2})?|[A-Za-z][A-Za-z0-9_/+:-]*)?\s*"
)
_DURATION = re.compile(r"([+-]?)((?:\d+[smhdw])+)")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_INTERVAL = re.compile(r"([+-]?\d+)([smhdwMqy])")
_DIGITS = re.compile(r"\s*[+-]?\d+\s*")

# TD_DATE_TRUNC's units, and TD_INTERVAL's unit letters mapped onto them.
TRUNC_UNITS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
INTERVAL_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "M": "month",
    "q": "quarter",
    "y": "year",
}

# TD_TIME_STRING's codes → TD_TIME_FORMAT patterns; without "!" the zone offset follows.
TIME_STRING_FORMATS = {
    "y": "yyyy",
    "q": "yyyy-MM",
    "M": "yyyy-MM",
    "w": "yyyy-MM-dd",
    "d": "yyyy-MM-dd",
    "h": "yyyy-MM-dd HH",
    "m": "yyyy-MM-dd HH:mm",
    "s": "yyyy-MM-dd HH:mm:ss",
}


class TimeValueError(ValueError):
    """An argument TD's functions would refuse (a malformed duration, say)."""


def parse_time(text: str, default_zone: str | None = "UTC") -> int | None:
    """TD_TIME_PARSE: unix seconds of ``text``; None when it is not a time.

    Accepts ``yyyy-MM-dd``, ``yyyy-MM-dd HH:mm[:ss[.fff]]`` (or ``T`` between), with an
    optional zone after it (``Z``, ``+09:00``, ``JST``, ``Asia/Tokyo``) that wins over
    ``default_zone``.
    """
    m = _TIME_STRING.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, _fraction, zone_text = m.groups()
    zone = resolve(zone_text, in_string=True) if zone_text else resolve(default_zone)
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return None
    return to_unix(local, zone)


def to_unix(local: datetime, zone: Zone) -> int:
    """Unix seconds of the wall-clock time ``local`` (naive) in ``zone``."""
    if zone.is_fixed:
        return int(local.replace(tzinfo=UTC).timestamp()) - zone.offset_s
    return int(local.replace(tzinfo=zone.tzinfo()).timestamp())


def to_local(t: int, zone: Zone) -> datetime:
    """The naive wall-clock time of unix second ``t`` in ``zone``."""
    return datetime.fromtimestamp(t, zone.tzinfo()).replace(tzinfo=None)


def time_bound(value: int | float | str | None, default_zone: str | None) -> int | None:
    """A TD_TIME_RANGE bound: unix seconds, a time string, or None (unbounded)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TimeValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if _DIGITS.fullmatch(value):
        return int(value)
    parsed = parse_time(value, default_zone)
    if parsed is None:
        raise TimeValueError(f"cannot parse time string {value!r}")
    return parsed


def time_range(
    t: int | None,
    start: int | float | str | None,
    end: int | float | str | None,
    default_zone: str | None = "UTC",
) -> bool | None:
    """TD_TIME_RANGE: ``start <= t < end``; a None bound is open."""
    if t is None:
        return None
    low, high = time_bound(start, default_zone), time_bound(end, default_zone)
    return (low is None or t >= low) and (high is None or t < high)


def parse_duration(text: str) -> int:
    """TD_TIME_ADD's duration (``1d``, ``-1h``, ``30m``, ``2w``, ``1h30m``) in seconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise TimeValueError(f"invalid duration {text!r}: use e.g. 1d, -1h, 30m, 10s, 1w")
    sign, body = m.groups()
    seconds = sum(int(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(body))
    return -seconds if sign == "-" else seconds


def time_add(t: int | str | None, duration: str, default_zone: str | None = "UTC") -> int | None:
    """TD_TIME_ADD: ``t`` (unix seconds or a time string) plus ``duration``."""
    if t is None:
        return None
    base = t if isinstance(t, int) else time_bound(t, default_zone)
    return None if base is None else base + parse_duration(duration)


def date_trunc(unit: str, t: int | None, default_zone: str | None = "UTC") -> int | None:
    """TD_DATE_TRUNC: the start of the ``unit`` holding ``t``, in ``default_zone``."""
    if t is None:
        return None
    zone = resolve(default_zone)
    return to_unix(_truncate(to_local(t, zone), _unit(unit)), zone)


def _unit(unit: str) -> str:
    name = unit.strip().lower()
    if name not in TRUNC_UNITS:
        raise TimeValueError(f"unknown unit {unit!r}: one of {', '.join(TRUNC_UNITS)}")
    return name


def _truncate(local: datetime, unit: str) -> datetime:
    if unit == "second":
        return local.replace(microsecond=0)
    if unit == "minute":
        return local.replace(second=0, microsecond=0)
    if unit == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":  # weeks start on Monday, as in Joda and DuckDB
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return day.replace(day=1, month=(day.month - 1) // 3 * 3 + 1)
    return day.replace(day=1, month=1)


def _shift(local: datetime, unit: str, n: int) -> datetime:
    """``local`` moved by ``n`` units of calendar time (months keep the day: it is the 1st)."""
    if unit in ("second", "minute", "hour", "day", "week"):
        seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}[unit]
        if unit in ("day", "week"):
            return local + timedelta(days=n * seconds // 86400)
        return local + timedelta(seconds=n * seconds)
    months = n * {"month": 1, "quarter": 3, "year": 12}[unit]
    index = local.year * 12 + local.month - 1 + months
    return local.replace(year=index // 12, month=index % 12 + 1)


def interval_range(spec: str, scheduled: int, default_zone: str | None = "UTC") -> tuple[int, int]:
    """TD_INTERVAL's ``[start, end)`` for ``spec`` at ``scheduled`` (TD_SCHEDULED_TIME).

    ``-Nu`` is the N whole units before the current one, ``Nu`` the current one and
    the N-1 after it (``u`` one of s m h d w M q y; weeks start on Monday). After a
    ``/`` comes the base: ``now`` (the range ends at ``scheduled`` itself), another
    ``Nu`` (the base moves by N units of its own, from the start of the current one)
    or a time string.
    """
    zone = resolve(default_zone)
    text = spec.strip()
    head, slash, offset = text.partition("/")
    m = _INTERVAL.fullmatch(head.strip())
    if m is None:
        raise TimeValueError(f"invalid interval {spec!r}: use e.g. -1d, -7d/now, -1M/-1M")
    n, unit = int(m.group(1)), INTERVAL_UNITS[m.group(2)]
    until_now = False
    base = to_local(scheduled, zone)
    if slash:
        offset = offset.strip()
        moved = _INTERVAL.fullmatch(offset)
        if offset.lower() == "now":
            until_now = True
        elif moved is not None:
            offset_unit = INTERVAL_UNITS[moved.group(2)]
            base = _shift(_truncate(base, offset_unit), offset_unit, int(moved.group(1)))
        else:
            parsed = parse_time(offset, default_zone)
            if parsed is None:
                raise TimeValueError(f"invalid interval base {offset!r} in {spec!r}")
            base = to_local(parsed, zone)
    current = _truncate(base, unit)
    if until_now:
        return to_unix(_shift(current, unit, min(n, 0)), zone), scheduled
    if n < 0:
        return to_unix(_shift(current, unit, n), zone), to_unix(current, zone)
    return to_unix(current, zone), to_unix(_shift(current, unit, n), zone)


def interval(
    t: int | None, spec: str, scheduled: int, default_zone: str | None = "UTC"
) -> bool | None:
    """TD_INTERVAL: whether ``t`` falls in ``interval_range(spec, …)``."""
    if t is None:
        return None
    start, end = interval_range(spec, scheduled, default_zone)
    return start <= t < end


def format_time(t: int | float | None, pattern: str, zone_name: str | None = "UTC") -> str | None:
    """TD_TIME_FORMAT: ``t`` formatted with a Joda/SimpleDateFormat ``pattern``."""
    if t is None:
        return None
    zone = resolve(zone_name)
    moment = datetime.fromtimestamp(float(t), zone.tzinfo())
    return format_datetime(moment, pattern, zone)


def time_string_pattern(code: str) -> str:
    """TD_TIME_STRING's code (``d!``, ``h``, …) as a TD_TIME_FORMAT pattern."""
    text = code.strip()
    bare = text.endswith("!")
    key = text[:-1] if bare else text
    if key not in TIME_STRING_FORMATS:
        raise TimeValueError(f"invalid TD_TIME_STRING format {code!r}")
    if bare:
        return TIME_STRING_FORMATS[key]
    # Without "!" TD prints the whole timestamp from the unit's start, with its offset.
    return "yyyy-MM-dd HH:mm:ssZ"


def time_string(t: int | None, code: str, zone_name: str | None = "UTC") -> str | None:
    """TD_TIME_STRING: ``t`` truncated to the code's unit and printed."""
    if t is None:
        return None
    text = code.strip()
    key = text[:-1] if text.endswith("!") else text
    unit = INTERVAL_UNITS.get(key, "second")
    start = date_trunc(unit, t, zone_name)
    return format_time(start, time_string_pattern(code), zone_name)
