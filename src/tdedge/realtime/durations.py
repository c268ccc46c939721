"""Durations as configuration files write them: ``90s``, ``30m``, ``12h``, ``7d``, ``2w``.

A bare number is seconds. Pure functions; the result is always whole milliseconds.
"""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*")
RULE = "a duration like 90s, 30m, 12h, 7d or 2w (a bare number is seconds)"


def parse_ms(value: object) -> int:
    """Milliseconds in ``value``; ValueError naming the rule when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"expected {RULE}, got {value!r}")
    if isinstance(value, int | float):
        ms = round(float(value) * 1000)
    elif isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m is None:
            raise ValueError(f"expected {RULE}, got {value!r}")
        ms = round(float(m.group(1)) * _UNITS_MS[m.group(2)])
    else:
        raise ValueError(f"expected {RULE}, got {value!r}")
    if ms <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return ms
