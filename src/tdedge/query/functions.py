"""TD's time functions as DuckDB Python UDFs, for calls the translator cannot inline.

``translate`` turns calls with constant arguments into native SQL; what is left (a
zone or a format taken from a column, a time string column) runs here, row by row,
through the same ``td_time`` code. NULL arguments reach the functions (``special``
null handling) because TD_TIME_RANGE treats a NULL bound as open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
from duckdb import sqltypes
from duckdb.func import FunctionNullHandling

from tdedge.query import division, macros, td_time, td_udfs


def _time_range(t: int | None, start: str | None, end: str | None, tz: str | None) -> bool | None:
    return td_time.time_range(t, start, end, tz)


def _interval(
    t: int | None, spec: str | None, tz: str | None, scheduled: int | None
) -> bool | None:
    if t is None or spec is None or scheduled is None:
        return None
    return td_time.interval(t, spec, scheduled, tz)


def _format(t: float | None, pattern: str | None, tz: str | None) -> str | None:
    if t is None or pattern is None:
        return None
    return td_time.format_time(t, pattern, tz)


def _parse(text: str | None, tz: str | None) -> int | None:
    return None if text is None else td_time.parse_time(text, tz)


def _add(t: str | None, duration: str | None, tz: str | None) -> int | None:
    if t is None or duration is None:
        return None
    return td_time.time_add(t, duration, tz)


def _trunc(unit: str | None, t: int | None, tz: str | None) -> int | None:
    if unit is None:
        return None
    return td_time.date_trunc(unit, t, tz)


def _time_string(t: int | None, code: str | None, tz: str | None) -> str | None:
    if code is None:
        return None
    return td_time.time_string(t, code, tz)


BIGINT, VARCHAR, BOOLEAN, DOUBLE = (
    sqltypes.BIGINT,
    sqltypes.VARCHAR,
    sqltypes.BOOLEAN,
    sqltypes.DOUBLE,
)

UDFS: tuple[
    tuple[str, Callable[..., Any], list[sqltypes.DuckDBPyType], sqltypes.DuckDBPyType], ...
] = (
    ("td_time_range", _time_range, [BIGINT, VARCHAR, VARCHAR, VARCHAR], BOOLEAN),
    ("td_interval", _interval, [BIGINT, VARCHAR, VARCHAR, BIGINT], BOOLEAN),
    ("td_time_format", _format, [DOUBLE, VARCHAR, VARCHAR], VARCHAR),
    ("td_time_parse", _parse, [VARCHAR, VARCHAR], BIGINT),
    ("td_time_add", _add, [VARCHAR, VARCHAR, VARCHAR], BIGINT),
    ("td_date_trunc", _trunc, [VARCHAR, BIGINT, VARCHAR], BIGINT),
    ("td_time_string", _time_string, [BIGINT, VARCHAR, VARCHAR], VARCHAR),
)


def _user_agent(agent: str) -> str | None:
    return td_udfs.parse_user_agent(agent)


def _ip(field: str, database: str | None) -> Callable[[str], Any]:
    def lookup(ip: str) -> Any:
        return td_udfs.ip_lookup(ip, field, database)

    return lookup


TD_UDFS: tuple[
    tuple[str, Callable[..., Any], list[sqltypes.DuckDBPyType], sqltypes.DuckDBPyType], ...
] = (
    ("td_parse_user_agent", _user_agent, [VARCHAR], VARCHAR),
    ("td_parse_user_agent_field", td_udfs.parse_user_agent, [VARCHAR, VARCHAR], VARCHAR),
    ("td_parse_agent", td_udfs.parse_agent, [VARCHAR], duckdb.map_type(VARCHAR, VARCHAR)),
    (
        "td_substring_inencoding",
        td_udfs.substring_in_encoding,
        [VARCHAR, BIGINT, VARCHAR],
        VARCHAR,
    ),
    ("td_java_format", td_udfs.java_format, [VARCHAR, VARCHAR], VARCHAR),
    ("td_luhn_check", td_udfs.luhn_check, [VARCHAR], BOOLEAN),
    ("td_url_parameter", td_udfs.url_parameter, [VARCHAR, VARCHAR], VARCHAR),
)


def _ip_udfs(
    database: str | None,
) -> tuple[tuple[str, Callable[..., Any], list[sqltypes.DuckDBPyType], sqltypes.DuckDBPyType], ...]:
    """TD_IP_TO_*, reading ``database`` (None: the bundled GeoLite2 City)."""
    texts = (
        "country_code",
        "country_name",
        "city_name",
        "most_specific_subdivision_name",
        "least_specific_subdivision_name",
        "time_zone",
        "postal_code",
    )
    return (
        *((f"td_ip_to_{field}", _ip(field, database), [VARCHAR], VARCHAR) for field in texts),
        ("td_ip_to_latitude", _ip("latitude", database), [VARCHAR], DOUBLE),
        ("td_ip_to_longitude", _ip("longitude", database), [VARCHAR], DOUBLE),
        ("td_ip_to_metro_code", _ip("metro_code", database), [VARCHAR], BIGINT),
        (
            "td_ip_to_subdivision_names",
            _ip("subdivision_names", database),
            [VARCHAR],
            duckdb.list_type(VARCHAR),
        ),
    )


def register(con: duckdb.DuckDBPyConnection, geoip_database: str | None = None) -> None:
    """Define the fallback UDFs on ``con`` (once per connection)."""
    for name, func, params, returns in UDFS + TD_UDFS + _ip_udfs(geoip_database):
        con.create_function(
            name,
            func,
            list[Any](params),
            returns,
            null_handling=FunctionNullHandling.SPECIAL,
            side_effects=False,
        )
    division.define(con)
    macros.define(con)
