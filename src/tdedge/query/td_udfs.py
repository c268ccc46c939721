"""Treasure Data's non-time Presto UDFs and Presto's URL functions, as pure Python.

Run row by row as DuckDB Python UDFs (query/functions.py). What TD computes with a
library, the same library computes here: user agents with woothee (TD's own parser),
IP addresses with a MaxMind GeoIP2/GeoLite2 City database read by ``maxminddb``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import woothee

# TD_PARSE_USER_AGENT's keys, in the order TD prints them.
AGENT_KEYS = ("os", "vendor", "os_version", "name", "category", "version")


def parse_user_agent(agent: str | None, option: str | None = None) -> str | None:
    """TD_PARSE_USER_AGENT: woothee's fields as a JSON object, or one field by name."""
    if agent is None:
        return None
    fields = parse_agent(agent) or {}
    if option is None:
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return fields.get(option.strip().lower())


def parse_agent(agent: str | None) -> dict[str, str] | None:
    """TD_PARSE_AGENT: woothee's fields as a map."""
    if agent is None:
        return None
    parsed: dict[str, Any] = woothee.parse(agent)
    return {key: str(parsed.get(key, "UNKNOWN")) for key in AGENT_KEYS}


def url_decode(text: str | None) -> str | None:
    """TD_URL_DECODE: ``%XX`` escapes and ``+`` decoded; NULL for a malformed escape."""
    if text is None:
        return None
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        return None


def substring_in_encoding(
    text: str | None, max_bytes: int | None, charset: str | None
) -> str | None:
    """TD_SUBSTRING_INENCODING: the longest prefix whose ``charset`` encoding fits."""
    if text is None or max_bytes is None or charset is None:
        return None
    try:
        encoded = text.encode(charset)
    except LookupError:
        raise ValueError(f"TD_SUBSTRING_INENCODING: unknown charset {charset!r}") from None
    if len(encoded) <= max_bytes:
        return text
    # Cut at a character boundary: the longest prefix whose encoding fits.
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if len(text[:mid].encode(charset)) <= max_bytes:
            low = mid
        else:
            high = mid - 1
    return text[:low]


# java.net.URI refuses these anywhere in a URI; Presto's url functions then give NULL.
_ILLEGAL = re.compile(r'[\x00-\x20"<>\\^`{|}\x7f]')
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def url_part(url: str | None, part: str) -> str | None:
    """Presto's ``url_extract_<part>``: java.net.URI's raw component, NULL if absent."""
    if url is None or _ILLEGAL.search(url) or url.count("#") > 1:
        return None
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return None
    if part == "protocol":
        return split.scheme or None
    if part == "host":
        host = split.netloc.rpartition("@")[2]
        # An IPv6 host keeps its brackets, as java.net.URI gives it.
        bracketed = host.startswith("[")
        host = host[: host.find("]") + 1] if bracketed else host.partition(":")[0]
        return host if host and _HOST.fullmatch(host) else None
    if part == "port":
        return None if port is None else str(port)
    if part == "path":
        if split.scheme and not split.netloc and not split.path.startswith("/"):
            return None  # an opaque URI (mailto:…) has no path
        return split.path
    if part == "query":
        return split.query if "?" in url.partition("#")[0] else None
    if part == "fragment":
        return split.fragment if "#" in url else None
    raise ValueError(f"unknown URL part {part!r}")


def url_parameter(url: str | None, name: str | None) -> str | None:
    """Presto's ``url_extract_parameter``: the raw value of the first ``name=``."""
    if name is None:
        return None
    query = url_part(url, "query")
    if query is None:
        return None
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if key == name:
            return value if eq else ""
    return None


# TD_IP_TO_*.
class GeoIPUnavailable(ValueError):
    pass


def _default_database() -> Path | None:
    try:
        from _maxminddb_geolite2 import geolite2_database
    except ImportError:
        return None
    return Path(geolite2_database())


@lru_cache(maxsize=4)
def _reader(path: str | None) -> Any:
    import maxminddb

    database = Path(path) if path else _default_database()
    if database is None or not database.is_file():
        raise GeoIPUnavailable(
            "TD_IP_TO_* needs a GeoIP2/GeoLite2 City database (.mmdb): "
            "install the maxminddb-geolite2 package or point geoip_database at one"
        )
    return maxminddb.open_database(str(database))


def _names(record: dict[str, Any], key: str) -> str | None:
    names = record.get(key, {}).get("names", {})
    value = names.get("en")
    return str(value) if value is not None else None


def ip_lookup(ip: str | None, field: str, database: str | None = None) -> Any:
    """One TD_IP_TO_<field> answer for ``ip``; None where the database has none."""
    if ip is None:
        return None
    reader = _reader(database)
    try:
        record = reader.get(ip.strip())
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    subdivisions = [
        str(s.get("names", {}).get("en")) for s in record.get("subdivisions", []) if s.get("names")
    ]
    location = record.get("location", {})
    if field == "country_code":
        return record.get("country", {}).get("iso_code")
    if field == "country_name":
        return _names(record, "country")
    if field == "city_name":
        return _names(record, "city")
    if field == "subdivision_names":
        return subdivisions
    if field == "most_specific_subdivision_name":
        return subdivisions[-1] if subdivisions else None
    if field == "least_specific_subdivision_name":
        return subdivisions[0] if subdivisions else None
    if field == "latitude":
        return location.get("latitude")
    if field == "longitude":
        return location.get("longitude")
    if field == "metro_code":
        return location.get("metro_code")
    if field == "time_zone":
        return location.get("time_zone")
    if field == "postal_code":
        return record.get("postal", {}).get("code")
    raise ValueError(f"unknown TD_IP_TO_ field {field!r}")
