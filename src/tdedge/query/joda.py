"""Joda-Time / SimpleDateFormat patterns, as TD_TIME_FORMAT takes them.

``tokens`` splits a pattern into letter runs and literal text; ``format_datetime``
prints a moment with them (the reference); ``strftime_pattern`` gives the equivalent
DuckDB ``strftime`` pattern when there is one, so the common patterns run as native SQL.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from tdedge.query.timezones import Zone


class PatternError(ValueError):
    pass


class Token(NamedTuple):
    letter: str  # "" for literal text
    width: int  # how many times the letter repeats
    text: str  # the literal text, for literal tokens


_LETTERS = frozenset("GyYxwweEDMdaKhHkmsSzZ")


@lru_cache(maxsize=256)
def tokens(pattern: str) -> tuple[Token, ...]:
    out: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            end = pattern.find("'", i + 1)
            if end == i + 1:  # '' is one quote
                out.append(Token("", 0, "'"))
                i += 2
                continue
            if end < 0:
                raise PatternError(f"unterminated quote in pattern {pattern!r}")
            out.append(Token("", 0, pattern[i + 1 : end].replace("''", "'")))
            i = end + 1
            continue
        if c.isascii() and c.isalpha():
            if c not in _LETTERS:
                raise PatternError(f"illegal pattern letter {c!r} in {pattern!r}")
            j = i
            while j < n and pattern[j] == c:
                j += 1
            out.append(Token(c, j - i, ""))
            i = j
            continue
        out.append(Token("", 0, c))
        i += 1
    return tuple(out)


def _pad(value: int, count: int) -> str:
    return str(value).zfill(count)


def _offset(seconds: int, colon: bool) -> str:
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    sep = ":" if colon else ""
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def format_datetime(moment: datetime, pattern: str, zone: Zone) -> str:
    """Print the aware ``moment`` (already in ``zone``) with a Joda ``pattern``."""
    parts: list[str] = []
    offset = moment.utcoffset()
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    for tok in tokens(pattern):
        c, k = tok.letter, tok.width
        if not c:
            parts.append(tok.text)
        elif c == "G":
            parts.append("AD")
        elif c in "yYx":
            year = moment.isocalendar()[0] if c == "x" else moment.year
            parts.append(_pad(year % 100, 2) if k == 2 else _pad(year, k))
        elif c == "w":
            parts.append(_pad(moment.isocalendar()[1], k))
        elif c == "e":
            parts.append(_pad(moment.isoweekday(), k))
        elif c == "E":
            parts.append(moment.strftime("%A" if k >= 4 else "%a"))
        elif c == "D":
            parts.append(_pad(moment.timetuple().tm_yday, k))
        elif c == "M":
            if k >= 4:
                parts.append(moment.strftime("%B"))
            elif k == 3:
                parts.append(moment.strftime("%b"))
            else:
                parts.append(_pad(moment.month, k))
        elif c == "d":
            parts.append(_pad(moment.day, k))
        elif c == "a":
            parts.append("AM" if moment.hour < 12 else "PM")
        elif c == "K":
            parts.append(_pad(moment.hour % 12, k))
        elif c == "h":
            parts.append(_pad(moment.hour % 12 or 12, k))
        elif c == "H":
            parts.append(_pad(moment.hour, k))
        elif c == "k":
            parts.append(_pad(moment.hour or 24, k))
        elif c == "m":
            parts.append(_pad(moment.minute, k))
        elif c == "s":
            parts.append(_pad(moment.second, k))
        elif c == "S":
            parts.append(f"{moment.microsecond:06d}000"[:k].ljust(k, "0"))
        elif c == "z":
            parts.append(_zone_name(moment, zone, offset_s, long=k >= 4))
        else:  # Z
            if k >= 3:
                parts.append(zone.name or _offset(offset_s, colon=True))
            elif offset_s == 0 and k == 2:
                parts.append("Z")
            else:
                parts.append(_offset(offset_s, colon=k == 2))
    return "".join(parts)


def _zone_name(moment: datetime, zone: Zone, offset_s: int, *, long: bool) -> str:
    if zone.is_fixed:
        return "UTC" if offset_s == 0 else _offset(offset_s, colon=True)
    if long:
        return zone.name or "UTC"
    return moment.tzname() or "UTC"


_STRFTIME: dict[tuple[str, int], str] = {
    ("y", 4): "%Y",
    ("y", 2): "%y",
    ("y", 1): "%Y",
    ("M", 1): "%-m",
    ("M", 2): "%m",
    ("M", 3): "%b",
    ("d", 1): "%-d",
    ("d", 2): "%d",
    ("H", 1): "%-H",
    ("H", 2): "%H",
    ("h", 1): "%-I",
    ("h", 2): "%I",
    ("m", 1): "%-M",
    ("m", 2): "%M",
    ("s", 1): "%-S",
    ("s", 2): "%S",
    ("S", 3): "%g",
    ("S", 6): "%f",
    ("a", 1): "%p",
    ("D", 1): "%-j",
    ("D", 3): "%j",
    ("E", 1): "%a",
    ("E", 2): "%a",
    ("E", 3): "%a",
}


@lru_cache(maxsize=256)
def strftime_pattern(pattern: str) -> str | None:
    """DuckDB's strftime pattern for ``pattern``, or None when it has no exact equivalent."""
    out: list[str] = []
    for tok in tokens(pattern):
        if not tok.letter:
            out.append(tok.text.replace("%", "%%"))
            continue
        key = (tok.letter, tok.width)
        if (tok.letter == "M" and tok.width > 4) or (tok.letter == "E" and tok.width >= 4):
            out.append("%B" if tok.letter == "M" else "%A")
        elif key == ("M", 4):
            out.append("%B")
        elif key in _STRFTIME:
            out.append(_STRFTIME[key])
        else:
            return None
    return "".join(out)
