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
from urllib.parse import urlsplit

import woothee

# Logs repeat their user agents and addresses: parsing each once is most of the cost.
_CACHED = 65536

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
    return dict(_woothee(agent))


@lru_cache(maxsize=_CACHED)
def _woothee(agent: str) -> tuple[tuple[str, str], ...]:
    parsed: dict[str, Any] = woothee.parse(agent)
    return tuple((key, str(parsed.get(key, "UNKNOWN"))) for key in AGENT_KEYS)


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
            "install the maxminddb-geolite2 package, or start serve with --geoip-database PATH"
        )
    return maxminddb.open_database(str(database))


@lru_cache(maxsize=_CACHED)
def _ip_record(ip: str, database: str | None) -> dict[str, Any] | None:
    reader = _reader(database)  # GeoIPUnavailable goes up: the query fails saying why
    try:
        record = reader.get(ip)
    except ValueError:  # not an IP address
        return None
    return record if isinstance(record, dict) else None


def _names(record: dict[str, Any], key: str) -> str | None:
    names = record.get(key, {}).get("names", {})
    value = names.get("en")
    return str(value) if value is not None else None


def ip_lookup(ip: str | None, field: str, database: str | None = None) -> Any:
    """One TD_IP_TO_<field> answer for ``ip``; None where the database has none."""
    if ip is None:
        return None
    record = _ip_record(ip.strip(), database)
    if record is None:
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


# Presto's format(): java.util.Formatter's common conversions.
_JAVA_SPEC = re.compile(r"%(?:(\d+)\$)?([-#+ 0,(]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def java_format(pattern: str | None, args_json: str | None) -> str | None:
    """``format(pattern, args…)`` with Java's %s %d %f %e %x %o %c %b %% %n conversions,
    flags - 0 + , ( and space, width, precision and ``n$`` positions."""
    if pattern is None or args_json is None:
        return None
    args: list[Any] = json.loads(args_json)
    out: list[str] = []
    pos = 0
    ordinary = 0
    for m in _JAVA_SPEC.finditer(pattern):
        out.append(pattern[pos : m.start()])
        pos = m.end()
        index, flags, width, precision, conversion = m.groups()
        if conversion == "%":
            out.append("%")
            continue
        if conversion == "n":
            out.append("\n")
            continue
        if index is not None:
            i = int(index) - 1
        else:
            i = ordinary
            ordinary += 1
        if i >= len(args):
            raise ValueError(f"format: missing argument for {m.group(0)!r}")
        out.append(_java_one(args[i], flags, width, precision, conversion, m.group(0)))
    out.append(pattern[pos:])
    return "".join(out)


def _java_one(
    value: Any, flags: str, width: str | None, precision: str | None, conversion: str, spec: str
) -> str:
    align = "<" if "-" in flags else ">"
    if conversion in "sS":
        text = "null" if value is None else _java_string(value)
        if precision is not None:
            text = text[: int(precision)]
        text = text.upper() if conversion == "S" else text
        return f"{text:{align}{width or ''}}"
    if conversion in "bB":
        text = "false" if value is None or value is False else "true"
        return f"{text:{align}{width or ''}}"
    if value is None:
        return f"{'null':{align}{width or ''}}"
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    zero = "0" if "0" in flags and "-" not in flags else ""
    group = "," if "," in flags else ""
    if conversion == "d" and isinstance(value, int) and not isinstance(value, bool):
        return _java_number(f"{value:{sign}{zero}{width or ''}{group}d}", value, flags)
    if conversion in "xXo" and isinstance(value, int) and not isinstance(value, bool):
        kind = {"x": "x", "X": "X", "o": "o"}[conversion]
        return f"{value:{align if not zero else ''}{zero}{width or ''}{kind}}"
    if conversion in "feE" and isinstance(value, int | float) and not isinstance(value, bool):
        digits = 6 if precision is None else int(precision)
        kind = conversion
        text = f"{float(value):{sign}{zero}{width or ''}{group}.{digits}{kind}}"
        return _java_number(text, value, flags)
    if conversion == "c" and isinstance(value, str) and len(value) == 1:
        return f"{value:{align}{width or ''}}"
    raise ValueError(f"format: {spec!r} cannot format {value!r}")


def _java_number(text: str, value: float, flags: str) -> str:
    if "(" in flags and value < 0:
        return "(" + text.replace("-", "", 1) + ")"
    return text


def _java_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e7:
        return repr(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(", ", "="))
    return str(value)


def luhn_check(digits: str | None) -> bool | None:
    """Presto's ``luhn_check``: the Luhn checksum of a string of digits."""
    if digits is None:
        return None
    if not (digits.isascii() and digits.isdigit()):  # "²" is a digit to isdigit()
        return False
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
