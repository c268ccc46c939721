"""Time-zone names as Treasure Data's functions accept them.

TD's UDFs resolve a zone with Java's ``TimeZone.getTimeZone``: IANA names
(``Asia/Tokyo``), ``UTC``/``GMT``, Java's three-letter short ids (``JST`` is
Asia/Tokyo, ``PST`` is America/Los_Angeles, ``EST`` a fixed -05:00) and offsets
(``+09:00``, ``GMT+9``). Java quietly falls back to GMT for a name it does not know;
tdedge refuses it instead, because a silently wrong day boundary is worse than an error.

Inside a time *string* (``'2013-01-01 00:00:00 PDT'``) a daylight-saving abbreviation
means its fixed offset: that is what whoever wrote it meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class UnknownTimeZone(ValueError):
    pass


# java.time.ZoneId.SHORT_IDS, which TimeZone.getTimeZone honours. EST, MST and HST are
# fixed offsets there (and in the IANA database), so they are not listed.
JAVA_SHORT_IDS = {
    "ACT": "Australia/Darwin",
    "AET": "Australia/Sydney",
    "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo",
    "AST": "America/Anchorage",
    "BET": "America/Sao_Paulo",
    "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare",
    "CNT": "America/St_Johns",
    "CST": "America/Chicago",
    "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa",
    "ECT": "Europe/Paris",
    "IET": "America/Indiana/Indianapolis",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "MIT": "Pacific/Apia",
    "NET": "Asia/Yerevan",
    "NST": "Pacific/Auckland",
    "PLT": "Asia/Karachi",
    "PNT": "America/Phoenix",
    "PRT": "America/Puerto_Rico",
    "PST": "America/Los_Angeles",
    "SST": "Pacific/Guadalcanal",
    "VST": "Asia/Ho_Chi_Minh",
}

# Abbreviations that only make sense as fixed offsets (hours east of UTC).
DAYLIGHT_ABBREVIATIONS = {"PDT": -7, "MDT": -6, "CDT": -5, "EDT": -4, "AKDT": -8, "HDT": -9}

_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?")
_UTC_NAMES = frozenset({"UTC", "GMT", "Z", "UT", "ZULU", "UCT"})


@dataclass(frozen=True, slots=True)
class Zone:
    """A resolved zone: an IANA name DuckDB's ICU knows, or a fixed offset in seconds."""

    name: str | None  # IANA name; None for a fixed offset
    offset_s: int = 0  # only for fixed offsets

    @property
    def is_fixed(self) -> bool:
        return self.name is None

    def tzinfo(self) -> tzinfo:
        if self.name is None:
            return timezone(timedelta(seconds=self.offset_s))
        return _zoneinfo(self.name)


UTC = Zone(None, 0)


@lru_cache(maxsize=512)
def resolve(name: str | None, *, in_string: bool = False) -> Zone:
    """The zone ``name`` means to TD; UnknownTimeZone when it means nothing."""
    if name is None:
        return UTC
    text = name.strip()
    upper = text.upper()
    if not text or upper in _UTC_NAMES:
        return UTC
    if in_string and upper in DAYLIGHT_ABBREVIATIONS:
        return Zone(None, DAYLIGHT_ABBREVIATIONS[upper] * 3600)
    m = _OFFSET.fullmatch(upper)
    if m is not None:
        sign, hours, minutes = m.groups()
        seconds = int(hours) * 3600 + int(minutes or 0) * 60
        if seconds > 18 * 3600:
            raise UnknownTimeZone(f"time zone offset out of range: {name!r}")
        return UTC if seconds == 0 else Zone(None, -seconds if sign == "-" else seconds)
    if upper in JAVA_SHORT_IDS:
        return Zone(JAVA_SHORT_IDS[upper])
    for candidate in (text, _title(text)):
        try:
            _zoneinfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return Zone(candidate)
    raise UnknownTimeZone(f"unknown time zone {name!r}")


def _title(text: str) -> str:
    # 'asia/tokyo' → 'Asia/Tokyo'; IANA names are case-sensitive files.
    return "/".join("_".join(w.capitalize() for w in part.split("_")) for part in text.split("/"))


@lru_cache(maxsize=512)
def _zoneinfo(name: str) -> ZoneInfo:
    return ZoneInfo(name)
