"""TD's time functions: a table of TD-dialect queries with their expected results.

Each query runs in a real DuckDB twice: translated with constant arguments inlined as
SQL (the fast path) and with the same arguments coming from a table column, which
sends them through the Python UDFs. Both must give the expected value.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from tdedge.query import td_time
from tdedge.query.functions import register
from tdedge.query.timezones import UnknownTimeZone, resolve
from tdedge.query.translate import Context, TranslationError, translate

# 2023-11-14 22:13:20 UTC = 2023-11-15 07:13:20 JST = 2023-11-14 14:13:20 PST.
NOW = 1_700_000_000


def run(sql: str, scheduled: int = NOW) -> Any:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    register(con)
    translated = translate(sql, Context(scheduled))
    row = con.execute(translated).fetchone()
    assert row is not None
    return row[0]


def run_from_column(expr: str, values: dict[str, Any], scheduled: int = NOW) -> Any:
    """Evaluate ``expr`` with ``values`` as columns of a one-row table (the UDF path)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    register(con)
    columns = ", ".join(f"? AS {name}" for name in values)
    con.execute(f"CREATE TABLE v AS SELECT {columns}", list(values.values()))
    row = con.execute(translate(f"SELECT {expr} FROM v", Context(scheduled))).fetchone()
    assert row is not None
    return row[0]


CASES: list[tuple[str, Any]] = [
    # TD_TIME_RANGE: start <= time < end, bounds as strings or unix seconds.
    ("TD_TIME_RANGE(1577836800, '2020-01-01', '2020-01-02')", True),
    ("TD_TIME_RANGE(1577923200, '2020-01-01', '2020-01-02')", False),
    ("TD_TIME_RANGE(1577836799, '2020-01-01', NULL)", False),
    ("TD_TIME_RANGE(1577836800, NULL, '2020-01-01')", False),
    ("TD_TIME_RANGE(100, 100, 101)", True),
    # The day in Tokyo starts 9 hours before the UTC one.
    ("TD_TIME_RANGE(1577804400, '2020-01-01', '2020-01-02', 'JST')", True),
    ("TD_TIME_RANGE(1577804399, '2020-01-01', '2020-01-02', 'JST')", False),
    ("TD_TIME_RANGE(1577804400, '2020-01-01', '2020-01-02', 'Asia/Tokyo')", True),
    # A zone inside the string wins over the default zone.
    ("TD_TIME_RANGE(1577836800, '2020-01-01 00:00:00 +0000', NULL, 'JST')", True),
    ("TD_TIME_RANGE(1577836799, '2020-01-01 09:00:00 JST', NULL)", False),
    # TD_TIME_PARSE, with daylight saving time in Los Angeles.
    ("TD_TIME_PARSE('2020-01-01')", 1577836800),
    ("TD_TIME_PARSE('2020-01-01 09:00:00', 'JST')", 1577836800),
    ("TD_TIME_PARSE('2020-07-01 00:00:00', 'PST')", 1593586800),  # PDT, -07:00
    ("TD_TIME_PARSE('2020-01-01 00:00:00', 'PST')", 1577865600),  # PST, -08:00
    ("TD_TIME_PARSE('2020-07-01 00:00:00 PDT')", 1593586800),
    ("TD_TIME_PARSE('2020-01-01T00:00:00Z', 'JST')", 1577836800),
    ("TD_TIME_PARSE('2020-01-01 00:00:00+09:00')", 1577804400),
    ("TD_TIME_PARSE('not a time')", None),
    # US spring forward: 02:30 does not exist on 2020-03-08 in Los Angeles.
    ("TD_TIME_PARSE('2020-03-08 03:00:00', 'America/Los_Angeles')", 1583661600),
    # TD_TIME_FORMAT with Joda patterns.
    ("TD_TIME_FORMAT(1577836800, 'yyyy-MM-dd HH:mm:ss')", "2020-01-01 00:00:00"),
    ("TD_TIME_FORMAT(1577836800, 'yyyy-MM-dd HH:mm:ss', 'JST')", "2020-01-01 09:00:00"),
    ("TD_TIME_FORMAT(1577836800, 'yyyy-MM-dd', 'PST')", "2019-12-31"),
    ("TD_TIME_FORMAT(1593586800, 'yyyy-MM-dd HH:mm z', 'PST')", "2020-07-01 00:00 PDT"),
    ("TD_TIME_FORMAT(1577836800, 'yyyy-MM-dd HH:mm:ssZ', 'JST')", "2020-01-01 09:00:00+0900"),
    ("TD_TIME_FORMAT(1577836800, 'EEE, d MMM yyyy h:mm a', 'UTC')", "Wed, 1 Jan 2020 12:00 AM"),
    ("TD_TIME_FORMAT(1577836800, '''day'' D', 'UTC')", "day 1"),
    ("TD_TIME_FORMAT(1577836800, 'yyyy-MM-dd', '+05:30')", "2020-01-01"),
    ("TD_TIME_FORMAT(1577836800, 'HH:mm', '-03:00')", "21:00"),
    # TD_TIME_ADD: durations in s m h d w.
    ("TD_TIME_ADD(1577836800, '1d')", 1577923200),
    ("TD_TIME_ADD(1577836800, '-1h')", 1577833200),
    ("TD_TIME_ADD(1577836800, '1h30m')", 1577842200),
    ("TD_TIME_ADD('2020-01-01', '1w', 'JST')", 1578409200),
    # TD_DATE_TRUNC in the zone's calendar.
    ("TD_DATE_TRUNC('day', 1700000000)", 1699920000),
    ("TD_DATE_TRUNC('day', 1700000000, 'JST')", 1699974000),
    ("TD_DATE_TRUNC('hour', 1700000000, 'Asia/Kolkata')", 1699997400),  # +05:30
    ("TD_DATE_TRUNC('week', 1700000000)", 1699833600),  # Monday 2023-11-13
    ("TD_DATE_TRUNC('month', 1700000000, 'PST')", 1698822000),  # Nov 1, PDT still
    ("TD_DATE_TRUNC('year', 1700000000)", 1672531200),
    # The day after the US fall-back transition starts at -08:00.
    ("TD_DATE_TRUNC('day', 1699257600, 'America/Los_Angeles')", 1699257600),
    # TD_SCHEDULED_TIME and TD_INTERVAL relative to it.
    ("TD_SCHEDULED_TIME()", NOW),
    ("TD_INTERVAL(1699920000, '-1d')", False),  # 2023-11-14 00:00 UTC is today
    ("TD_INTERVAL(1699919999, '-1d')", True),  # yesterday
    ("TD_INTERVAL(1699833599, '-1d')", False),
    ("TD_INTERVAL(1699920000, '1d')", True),
    ("TD_INTERVAL(1699887600, '-1d', 'JST')", True),  # 2023-11-14 00:00 JST
    ("TD_INTERVAL(1699974000, '-1d', 'JST')", False),  # today in Tokyo
    ("TD_INTERVAL(1699999999, '-1h/now')", True),
    ("TD_INTERVAL(1700000000, '-1h/now')", False),
    ("TD_INTERVAL(1696118400, '-1M')", True),  # October
    ("TD_INTERVAL(1693526400, '-1M/-1M')", True),  # September
    ("TD_INTERVAL(1577836800, '-1d/2020-01-02')", True),
    # TD_TIME_STRING.
    ("TD_TIME_STRING(1700000000, 'd!', 'JST')", "2023-11-15"),
    ("TD_TIME_STRING(1700000000, 'h!')", "2023-11-14 22"),
    ("TD_TIME_STRING(1700000000, 'M', 'JST')", "2023-11-01 00:00:00+0900"),
]


@pytest.mark.parametrize(("expr", "expected"), CASES)
def test_td_function_inlined(expr: str, expected: Any) -> None:
    assert run(f"SELECT {expr}") == expected


def _columnised(expr: str) -> tuple[str, dict[str, Any]]:
    """Move every string literal of ``expr`` into a column so the UDF path runs."""
    import re

    values: dict[str, Any] = {}

    def lift(m: re.Match[str]) -> str:
        name = f"c{len(values)}"
        values[name] = m.group(0)[1:-1].replace("''", "'")
        return name

    return re.sub(r"'(?:[^']|'')*'", lift, expr), values


@pytest.mark.parametrize(("expr", "expected"), [c for c in CASES if "'" in c[0]])
def test_td_function_through_udf(expr: str, expected: Any) -> None:
    lifted, values = _columnised(expr)
    assert run_from_column(lifted, values) == expected


def test_time_range_with_time_column_prunes_to_plain_comparisons() -> None:
    sql = translate(
        "SELECT count(*) FROM t WHERE TD_TIME_RANGE(time, '2020-01-01', '2020-01-02', 'JST')",
        Context(NOW),
    )
    assert "time >= 1577804400 AND time < 1577890800" in sql
    assert "td_time_range" not in sql.lower()


def test_interval_becomes_plain_comparisons() -> None:
    sql = translate("SELECT 1 FROM t WHERE TD_INTERVAL(time, '-1d', 'JST')", Context(NOW))
    assert "time >= 1699887600 AND time < 1699974000" in sql


def test_unknown_time_zone_is_an_error_not_utc() -> None:
    with pytest.raises(TranslationError, match="unknown time zone"):
        translate("SELECT TD_TIME_FORMAT(time, 'yyyy', 'Mars/Base') FROM t", Context(NOW))
    with pytest.raises(UnknownTimeZone):
        resolve("Nowhere")


def test_bad_duration_and_interval_are_errors() -> None:
    with pytest.raises(TranslationError, match="invalid duration"):
        translate("SELECT TD_TIME_ADD(time, '1x') FROM t", Context(NOW))
    with pytest.raises(TranslationError, match="invalid interval"):
        translate("SELECT 1 FROM t WHERE TD_INTERVAL(time, 'yesterday')", Context(NOW))


def test_td_last_and_first_pick_by_time() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, 'a'), (3, 'c'), (2, 'b')) v(time, x)")
    sql = translate("SELECT TD_LAST(x, time), TD_FIRST(x, time) FROM t", Context(NOW))
    assert con.execute(sql).fetchone() == ("c", "a")


def test_interval_range_units() -> None:
    # Weeks start on Monday; quarters and years are calendar ones.
    assert td_time.interval_range("-1w", NOW) == (1699228800, 1699833600)
    assert td_time.interval_range("-1q", NOW) == (1688169600, 1696118400)
    assert td_time.interval_range("0y/now", NOW) == (1672531200, NOW)
    assert td_time.interval_range("-7d/-1d", NOW) == (1699228800, 1699833600)
