"""Presto's answers, and TD's UDFs, through the translator and a real DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import duckdb
import pytest
from _maxminddb_geolite2 import geolite2_database

from tdedge.query.functions import register
from tdedge.query.td_udfs import luhn_check, url_parameter, url_part
from tdedge.query.translate import Context, TranslationError, translate

# 2026-12-01 15:00:00 UTC = 2026-12-02 00:00:00 in Tokyo.
T = 1796137200
SCHEMA = {"db1": {"t": {"time": "BIGINT", "k": "VARCHAR", "s": "VARCHAR"}}}


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")  # as query/session.py sets it
    register(c)
    c.execute("ATTACH ':memory:' AS lake")
    c.execute("CREATE SCHEMA lake.db1")
    c.execute(
        "CREATE TABLE lake.db1.t AS SELECT * FROM (VALUES "
        f"({T}, 'a', 'x'), ({T + 100}, 'a', 'y'), ({T + 10_000}, 'a', 'z'), ({T - 60}, 'b', 'w')"
        ") v(time, k, s)"
    )
    c.execute("USE lake.db1")
    return c


def run(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    return con.execute(translate(sql, Context(T), "db1", SCHEMA)).fetchall()


def one(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    rows = run(con, sql)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


# The wrong answers.
def test_from_unixtime_with_a_zone_buckets_days_in_that_zone(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = run(
        con,
        "SELECT date_trunc('day', from_unixtime(time, 'Asia/Tokyo')) AS d, count(*) "
        "FROM t GROUP BY 1 ORDER BY 1",
    )
    # 14:59 UTC on Dec 1 is 23:59 in Tokyo; the other three are on Dec 2 there.
    assert rows == [
        ("2026-12-01 00:00:00.000 Asia/Tokyo", 1),
        ("2026-12-02 00:00:00.000 Asia/Tokyo", 3),
    ]
    assert one(con, f"SELECT day(from_unixtime({T}, 'Asia/Tokyo'))") == 2
    assert one(con, f"SELECT hour(from_unixtime({T}, 'Asia/Tokyo'))") == 0
    assert one(con, f"SELECT format_datetime(from_unixtime({T}, 'Asia/Tokyo'), 'yyyy-MM-dd')") == (
        "2026-12-02"
    )
    # The instant is unchanged.
    assert one(con, f"SELECT to_unixtime(from_unixtime({T}, 'Asia/Tokyo'))") == T


def test_the_zone_follows_a_column_out_of_a_subquery(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(
        con,
        "SELECT CAST(d AS DATE) AS day, count(*) FROM "
        "(SELECT from_unixtime(time, 'Asia/Tokyo') AS d FROM t) s GROUP BY 1 ORDER BY 1",
    )
    assert [(str(d), n) for d, n in rows] == [("2026-12-01", 1), ("2026-12-02", 3)]


def test_timestamp_with_time_zone_prints_as_presto_prints_it(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, f"SELECT CAST(from_unixtime({T}, 'Asia/Tokyo') AS VARCHAR)") == (
        "2026-12-02 00:00:00.000 Asia/Tokyo"
    )
    assert one(con, f"SELECT from_unixtime({T}, '+09:00')") == "2026-12-02 00:00:00.000 +09:00"
    assert one(con, f"SELECT from_unixtime({T}) AT TIME ZONE 'America/New_York'") == (
        "2026-12-01 10:00:00.000 America/New_York"
    )


def test_date_diff_counts_whole_units(con: duckdb.DuckDBPyConnection) -> None:
    assert (
        one(
            con,
            "SELECT date_diff('day', TIMESTAMP '2020-01-01 23:00:00', "
            "TIMESTAMP '2020-01-02 01:00:00')",
        )
        == 0
    )
    assert one(con, "SELECT date_diff('day', DATE '2020-01-01', DATE '2020-01-03')") == 2
    assert (
        one(
            con,
            "SELECT date_diff('hour', TIMESTAMP '2020-01-01 00:59:00', "
            "TIMESTAMP '2020-01-01 01:00:00')",
        )
        == 0
    )


def test_slice_takes_a_length(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT slice(ARRAY[1, 2, 3, 4, 5], 2, 3)") == [2, 3, 4]
    assert one(con, "SELECT slice(ARRAY[1, 2, 3, 4], -2, 2)") == [3, 4]
    assert one(con, "SELECT slice(ARRAY[1, 2, 3, 4], 3, 10)") == [3, 4]


def test_a_string_that_is_not_an_integer_does_not_cast_to_one(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, "SELECT TRY_CAST('4.5' AS INTEGER)") is None
    assert one(con, "SELECT TRY_CAST('45' AS INTEGER)") == 45
    assert one(con, "SELECT CAST(4.5 AS INTEGER)") == 5  # a number still rounds
    with pytest.raises(duckdb.Error, match=r"Cannot cast '4\.5' to INTEGER"):
        run(con, "SELECT CAST('4.5' AS INTEGER)")


def test_regexp_replace_reads_javas_group_references(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, r"SELECT regexp_replace('1a 2b 14m', '(\d+)([ab]) ', '3c$2 ')") == (
        "3ca 3cb 14m"
    )
    assert one(con, r"SELECT regexp_replace('ab', '(?<x>a)', '[${x}]')") == "[a]b"
    assert one(con, r"SELECT regexp_replace('ab', 'a', '\$')") == "$b"
    with pytest.raises(TranslationError, match="regexp_replace"):
        run(con, "SELECT regexp_replace(s, 'a', s) FROM t")


# TD's functions.
def test_td_functions_nest(con: duckdb.DuckDBPyConnection) -> None:
    sql = (
        "SELECT count(*) FROM t WHERE "
        "TD_TIME_RANGE(time, TD_TIME_ADD(TD_SCHEDULED_TIME(), '-1d'), TD_SCHEDULED_TIME())"
    )
    assert one(con, sql) == 1  # only the row a minute before the scheduled time
    translated = translate(sql, Context(T), "db1", SCHEMA)
    assert f"time >= {T - 86400} AND t.time < {T}" in translated  # literal bounds: pruning
    assert one(
        con, "SELECT TD_TIME_FORMAT(TD_TIME_ADD(TD_SCHEDULED_TIME(), '1d'), 'yyyy-MM-dd')"
    ) == ("2026-12-02")


def test_td_sessionize_window(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(
        con,
        "SELECT TD_SESSIONIZE_WINDOW(time, 3600) OVER (PARTITION BY k ORDER BY time) AS sid, "
        "k, time FROM t ORDER BY k, time",
    )
    ids = [r[0] for r in rows]
    assert ids[0] == ids[1]  # 100 s apart: one session
    assert ids[2] != ids[1]  # 9900 s later: a new one
    assert ids[3] not in ids[:3]  # another partition
    assert all(len(str(i)) == 36 for i in ids)


def test_td_parse_user_agent_and_agent(con: duckdb.DuckDBPyConnection) -> None:
    agent = (
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/535.7 "
        "(KHTML, like Gecko) Chrome/16.0.912.77 Safari/535.7"
    )
    parsed = json.loads(str(one(con, f"SELECT TD_PARSE_USER_AGENT('{agent}')")))
    assert parsed == {
        "os": "Windows 7",
        "vendor": "Google",
        "os_version": "NT 6.1",
        "name": "Chrome",
        "category": "pc",
        "version": "16.0.912.77",
    }
    assert one(con, f"SELECT TD_PARSE_USER_AGENT('{agent}', 'os')") == "Windows 7"
    assert one(con, f"SELECT TD_PARSE_AGENT('{agent}')['name']") == "Chrome"


def test_td_string_functions(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT TD_URL_DECODE('a%20b+c%E3%81%82')") == "a b cあ"
    assert one(con, "SELECT TD_MD5('hello')") == "5d41402abc4b2a76b9719d911017c592"
    assert one(con, "SELECT TD_SUBSTRING_INENCODING('あいう', 7, 'UTF-8')") == "あい"


def test_td_ip_functions(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT TD_IP_TO_COUNTRY_CODE('8.8.8.8')") == "US"
    assert one(con, "SELECT TD_IP_TO_COUNTRY_NAME('8.8.8.8')") == "United States"
    assert one(con, "SELECT TD_IP_TO_TIME_ZONE('128.101.101.101')") == "America/Chicago"
    assert one(con, "SELECT TD_IP_TO_LEAST_SPECIFIC_SUBDIVISION_NAME('128.101.101.101')") == (
        "Minnesota"
    )
    assert one(con, "SELECT TD_IP_TO_COUNTRY_CODE('not an ip')") is None


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT TD_NO_SUCH_THING(1)", "TD_NO_SUCH_THING is not a Treasure Data function"),
        ("SELECT TD_IP_TO_DOMAIN('8.8.8.8')", "TD_IP_TO_DOMAIN needs"),
        ("SELECT TD_SESSIONIZE(time, 60, k) FROM t", "TD_SESSIONIZE_WINDOW"),
        ("SELECT TD_SESSIONIZE_WINDOW(time, 60) FROM t", "window function"),
    ],
)
def test_td_functions_without_a_translation_name_themselves(
    con: duckdb.DuckDBPyConnection, sql: str, message: str
) -> None:
    with pytest.raises(TranslationError, match=message):
        run(con, sql)


# Presto functions sqlglot leaves untranslated.
def test_url_functions(con: duckdb.DuckDBPyConnection) -> None:
    url = "'http://user@example.com:8080/a/b?x=1&y=%20z&e#frag'"
    assert run(
        con,
        f"SELECT url_extract_protocol({url}), url_extract_host({url}), url_extract_port({url}), "
        f"url_extract_path({url}), url_extract_query({url}), url_extract_fragment({url}), "
        f"url_extract_parameter({url}, 'y'), url_extract_parameter({url}, 'e'), "
        f"url_extract_parameter({url}, 'nope')",
    ) == [("http", "example.com", 8080, "/a/b", "x=1&y=%20z&e", "frag", "%20z", "", None)]
    assert one(con, "SELECT url_extract_query('http://a.com/p')") is None
    assert one(con, "SELECT url_extract_host('not a url')") is None


def test_aggregates_and_collections(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT map_agg(k, s) FROM (SELECT * FROM t ORDER BY time)") in (
        {"a": "x", "b": "w"},
        {"a": "y", "b": "w"},
        {"a": "z", "b": "w"},
    )
    assert one(con, "SELECT cardinality(approx_set(k)) FROM t") == 2
    assert (
        one(con, "SELECT cardinality(merge(h)) FROM (SELECT approx_set(s) h FROM t GROUP BY k)")
        == 4
    )
    assert one(con, "SELECT every(time > 0) FROM t") is True
    assert one(
        con,
        "SELECT approx_percentile(x, ARRAY[0.0, 1.0]) FROM UNNEST(ARRAY[1, 5, 10]) AS u(x)",
    ) == [1, 10]
    assert one(con, "SELECT map_filter(MAP(ARRAY['a', 'b'], ARRAY[1, 2]), (k, v) -> v > 1)") == {
        "b": 2
    }
    assert one(con, "SELECT zip(ARRAY[1, 2], ARRAY['a', 'b'])") == [(1, "a"), (2, "b")]
    assert one(con, f"SELECT at_timezone(from_unixtime({T}), 'Asia/Tokyo')") == (
        "2026-12-02 00:00:00.000 Asia/Tokyo"
    )


def test_the_zone_follows_a_column_into_the_where_clause(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(
        con,
        "SELECT count(*) FROM (SELECT from_unixtime(time, 'Asia/Tokyo') AS d FROM t) s "
        "WHERE hour(d) = 0",
    )
    # T and T + 100 are 00:00 and 00:01 in Tokyo; T + 10000 is 02:46, T - 60 is 23:59.
    assert rows == [(2,)]


URLS = [
    "http://user@example.com:8080/a/b?x=1&y=%20z&e#frag",
    "https://127.0.0.1/req_path",
    "ftp://path/file",
    "http://[::1]:8080/p?q",
    "http://a_b.com/p",
    "http://example.com",
    "http://example.com/?",
    "http://example.com/#",
    "mailto:someone@example.com",
    "/relative/path?x=1",
    "not a url",
    "http://example.com/a b",
    "http://example.com/p#a#b",
    "http://example.com:/p",
    "",
]


@pytest.mark.parametrize("url", URLS)
def test_native_url_parts_agree_with_the_reference(
    con: duckdb.DuckDBPyConnection, url: str
) -> None:
    parts = ("protocol", "host", "port", "path", "query", "fragment")
    sql = "SELECT " + ", ".join(f"url_extract_{p}('{url}')" for p in parts)
    got = run(con, sql)[0]
    want = tuple(
        None if v is None else (int(v) if p == "port" else v)
        for p, v in ((p, url_part(url, p)) for p in parts)
    )
    assert got == want
    for name in ("x", "y", "e", "q", "nope"):
        assert one(con, f"SELECT url_extract_parameter('{url}', '{name}')") == url_parameter(
            url, name
        )


def test_td_ip_functions_read_the_configured_database(tmp_path: Path) -> None:
    bundled = duckdb.connect()
    register(bundled, geolite2_database())
    sql = translate("SELECT TD_IP_TO_COUNTRY_CODE('8.8.8.8')", Context(T))
    assert bundled.execute(sql).fetchall() == [("US",)]
    missing = duckdb.connect()
    register(missing, str(tmp_path / "none.mmdb"))
    with pytest.raises(duckdb.Error, match="--geoip-database"):
        missing.execute(sql).fetchall()


def test_hive_keeps_its_own_rules(con: duckdb.DuckDBPyConnection) -> None:
    hive = translate("SELECT 7 / 2, TD_TIME_FORMAT(0, 'yyyy')", Context(T, "hive"))
    assert con.execute(hive).fetchall() == [(3.5, "1970")]
    assert one(con, "SELECT 7 / 2") == 3


def test_td_sessionize_window_adds_no_column_to_a_star(con: duckdb.DuckDBPyConnection) -> None:
    sql = (
        "SELECT *, TD_SESSIONIZE_WINDOW(time, 3600) OVER (PARTITION BY k ORDER BY time) AS sid "
        "FROM t"
    )
    names = [d[0] for d in con.execute(translate(sql, Context(T), "db1", SCHEMA)).description]
    assert names == ["time", "k", "s", "sid"]


def test_a_json_string_cast_to_varchar_loses_its_quotes(con: duckdb.DuckDBPyConnection) -> None:
    doc = """'{"a": "x", "n": 1, "o": {"b": 1}}'"""
    assert one(con, f"SELECT CAST(json_extract({doc}, '$.a') AS VARCHAR)") == "x"
    assert one(con, f"SELECT CAST(json_extract({doc}, '$.n') AS VARCHAR)") == "1"
    assert one(con, f"SELECT TRY_CAST(json_extract({doc}, '$.o') AS VARCHAR)") is None
    assert one(con, f"SELECT json_extract_scalar({doc}, '$.o')") is None
    assert one(con, "SELECT json_extract_scalar('not json', '$.a')") is None


def test_the_zone_survives_aggregates_and_interval_arithmetic(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, "SELECT max(from_unixtime(time, 'Asia/Tokyo')) FROM t") == (
        "2026-12-02 02:46:40.000 Asia/Tokyo"
    )
    assert one(con, f"SELECT from_unixtime({T}, 'Asia/Tokyo') + INTERVAL '1' DAY") == (
        "2026-12-03 00:00:00.000 Asia/Tokyo"
    )
    assert (
        one(con, f"SELECT coalesce(NULL, from_unixtime({T}, 'Asia/Tokyo'))")
        == "2026-12-02 00:00:00.000 Asia/Tokyo"
    )


def test_division_by_zero_fails_as_presto_does_and_other_divisions_stay(
    con: duckdb.DuckDBPyConnection,
) -> None:
    # DuckDB would answer NULL, which a report reads as "no data".
    assert one(con, "SELECT 7 / 2") == 3
    assert one(con, "SELECT -7 / 2") == -3
    assert one(con, "SELECT 7.0E0 / 2") == 3.5
    assert one(con, "SELECT count(*) / 2 FROM t") == 2
    with pytest.raises(duckdb.Error, match="Division by zero"):
        run(con, "SELECT 7 / 0")
    with pytest.raises(duckdb.Error, match="Division by zero"):
        run(con, "SELECT count(*) / (count(*) - 4) FROM t")
    # Only the rows that divide by zero fail: a guard keeps working.
    guarded = "SELECT CASE WHEN n = 0 THEN NULL ELSE 8 / n END FROM (VALUES 0, 2) v(n)"
    assert sorted(run(con, guarded), key=str) == [(4,), (None,)]
    assert one(con, "SELECT 8 / NULLIF(0, 0)") is None


def test_a_double_divided_by_zero_is_infinity_or_nan_as_in_presto(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, "SELECT 1.0E0 / 0") == float("inf")
    assert one(con, "SELECT -1.0E0 / 0") == float("-inf")
    assert math.isnan(one(con, "SELECT 0.0E0 / 0"))  # type: ignore[arg-type]
    assert one(con, "SELECT 1 / 0.0E0") == float("inf")
    assert one(con, "SELECT CAST(1 AS REAL) / 0") == float("inf")
    assert one(con, "SELECT count(*) * 1.0E0 / 0 FROM t") == float("inf")
    # An integer or a decimal divided by zero still fails.
    with pytest.raises(duckdb.Error, match="Division by zero"):
        run(con, "SELECT 1.5 / 0")
    assert one(con, "SELECT try(1.5 / 0)") is None
    assert one(con, "SELECT try(7 / 0)") is None


def test_a_decimal_quotient_is_rounded_half_up_to_the_larger_scale(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, "SELECT 1.0 / 3") == Decimal("0.3")
    assert one(con, "SELECT 2 / 3.0") == Decimal("0.7")
    assert one(con, "SELECT -2 / 3.0") == Decimal("-0.7")
    assert one(con, "SELECT 1.00 / 3") == Decimal("0.33")
    assert one(con, "SELECT 0.05 / 1") == Decimal("0.05")
    assert one(con, "SELECT 99999.0 / 0.001") == Decimal("99999000.000")
    assert one(con, "SELECT 1.5 / -0.5") == Decimal("-3.0")
    assert one(con, "SELECT count(*) * 1.0 / 3 FROM t") == Decimal("1.3")
    assert one(con, "SELECT CAST(1 AS DECIMAL(38, 10)) / 3") == Decimal("0.3333333333")
    big = "CAST('123456789012345678901234567890.12' AS DECIMAL(38, 2))"
    assert one(con, f"SELECT {big} / 7") == Decimal("17636684144620811271604938270.02")
    # With a double the quotient is a double.
    assert one(con, "SELECT 1.0 / 4.0E0") == 0.25
    rows = run(con, "SELECT x / 3 FROM (VALUES 1.05, NULL, -2.35) v(x)")
    assert rows == [(Decimal("0.35"),), (None,), (Decimal("-0.78"),)]


def test_decimal_division_matches_exact_half_up_rounding(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rng = random.Random(7)
    cases = []
    for _ in range(300):
        s1, s2 = rng.randint(0, 6), rng.randint(0, 6)
        p1, p2 = s1 + rng.randint(1, 8), s2 + rng.randint(1, 8)
        a = Decimal(rng.randint(-(10**p1) + 1, 10**p1 - 1)).scaleb(-s1)
        b = Decimal(rng.choice([-1, 1]) * rng.randint(1, 10**p2 - 1)).scaleb(-s2)
        cases.append((a, p1, s1, b, p2, s2))
    values = ", ".join(
        f"(CAST('{a}' AS DECIMAL({p1}, {s1})) / CAST('{b}' AS DECIMAL({p2}, {s2})))"
        for a, p1, s1, b, p2, s2 in cases
    )
    got = run(con, f"SELECT * FROM (VALUES {values})")
    with localcontext() as exact:
        exact.prec = 80
        for (a, _, s1, b, _, s2), (quotient,) in zip(cases, got, strict=True):
            unit = Decimal(1).scaleb(-max(s1, s2))
            assert quotient == (a / b).quantize(unit, rounding=ROUND_HALF_UP), (a, b)


def test_a_group_that_takes_no_part_in_the_match_is_null_as_in_presto(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert one(con, "SELECT regexp_extract('abc', '(z)?c', 1)") is None
    assert one(con, "SELECT regexp_extract('ab', '(a)|(b)', 1)") == "a"
    assert one(con, "SELECT regexp_extract('b', '(a)|(b)', 1)") is None
    assert one(con, "SELECT regexp_extract_all('ab', '(a)|(b)', 2)") == [None, "b"]
    assert one(con, "SELECT regexp_extract_all('cac', '(z)?c', 1)") == [None, None]
    # A group that takes part in every match may match the empty string.
    assert one(con, "SELECT regexp_extract('xbc', '(a*)x', 1)") == ""
    assert one(con, "SELECT regexp_extract_all('xx', '(a*)x', 1)") == ["", ""]
    # Where '' could be either, the query fails rather than guess.
    with pytest.raises(duckdb.Error, match="cannot tell NULL from ''"):
        run(con, "SELECT regexp_extract('b', '(a*)|b', 1)")
    assert one(con, "SELECT regexp_extract('a', '(a*)|b', 1)") == "a"


def test_map_zip_with_covers_the_keys_of_both_maps(con: duckdb.DuckDBPyConnection) -> None:
    got = one(
        con,
        "SELECT map_zip_with(MAP(ARRAY['k1', 'k2'], ARRAY[1, 2]), "
        "MAP(ARRAY['k2', 'k3'], ARRAY[4, 9]), (k, v1, v2) -> coalesce(v1, 0) * 10 + v2)",
    )
    assert got == {"k1": None, "k2": 24, "k3": 9}
    rows = run(
        con,
        "SELECT map_zip_with(MAP(ARRAY[k], ARRAY[1]), MAP(ARRAY[k], ARRAY[2]), "
        "(x, a, b) -> x || CAST(a + b AS VARCHAR)) FROM t WHERE s = 'w'",
    )
    assert rows == [({"b": "b3"},)]


def test_multimap_agg_groups_each_keys_values(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(
        con,
        "SELECT g, multimap_agg(k, v) FROM (VALUES (1, 'a', 1), (1, 'b', 2), (1, 'a', 3), "
        "(1, NULL, 4), (2, 'c', NULL)) AS t(g, k, v) GROUP BY g ORDER BY g",
    )
    assert rows == [(1, {"a": [1, 3], "b": [2]}), (2, {"c": [None]})]
    assert one(con, "SELECT multimap_agg(k, s) FROM t WHERE false") is None


def test_to_iso8601_of_a_date_and_a_refused_timestamp(con: duckdb.DuckDBPyConnection) -> None:
    assert one(con, "SELECT to_iso8601(DATE '2020-01-02')") == "2020-01-02"
    assert one(con, "SELECT to_iso8601(CAST(NULL AS DATE))") is None
    # Trino's text depends on the timestamp type's precision, which DuckDB does not keep.
    with pytest.raises(duckdb.Error, match="to_iso8601 of a timestamp"):
        run(con, "SELECT to_iso8601(TIMESTAMP '2020-01-02 03:04:05')")
    with pytest.raises(TranslationError, match="to_iso8601 of a timestamp"):
        run(con, "SELECT to_iso8601(from_unixtime(time)) FROM t")


def test_luhn_check_of_a_digit_python_counts_but_int_does_not_is_false() -> None:
    assert luhn_check("79927398713") is True
    assert luhn_check("7992739871²") is False


def test_a_double_cast_to_an_integer_rounds_half_away_from_zero(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert run(
        con,
        "SELECT CAST(2.5e0 AS INTEGER), CAST(-2.5e0 AS INTEGER), CAST(2.5e0 AS BIGINT), "
        "CAST(-0.5e0 AS SMALLINT), CAST(2.5e0 AS TINYINT), TRY_CAST(-2.5e0 AS INTEGER), "
        "CAST(REAL '2.5' AS INTEGER), CAST(3.5e0 AS INTEGER), "
        "CAST(0.49999999999999994e0 AS INTEGER)",
    ) == [(3, -3, 3, -1, 3, -3, 3, 4, 0)]
    # A column's type is known only when the query runs.
    assert run(
        con,
        "SELECT CAST(x AS BIGINT), CAST(CAST(x AS REAL) AS INTEGER), TRY_CAST(x AS SMALLINT) "
        "FROM (VALUES (2.5e0), (-2.5e0), (NULL)) v(x)",
    ) == [(3, 3, 3), (-3, -3, -3), (None, None, None)]
    # A decimal already rounds half up; integers and strings are unchanged.
    assert run(
        con,
        "SELECT CAST(-2.5 AS INTEGER), CAST(7 AS TINYINT), CAST('12' AS BIGINT), "
        "CAST(NULL AS INTEGER)",
    ) == [(-3, 7, 12, None)]
    with pytest.raises(duckdb.Error, match="out of range"):
        run(con, "SELECT CAST(1e10 AS INTEGER)")


def test_substr_gives_presto_empty_strings(con: duckdb.DuckDBPyConnection) -> None:
    assert run(
        con,
        "SELECT substr('abc', 0), substr('abc', 3, -1), substr('abc', 0, 2), "
        "substr('abc', -5), substr('abc', -4, 2), substr('abc', 2, 0), substr('abc', 4)",
    ) == [("", "", "", "", "", "", "")]
    assert run(
        con,
        "SELECT substr('abc', 2), substr('abc', -1), substr('abc', -3, 2), "
        "substr('abc', 2, 10), substring('abc' FROM 2 FOR 1), substring('abc' FROM 0 FOR 2), "
        "substr('日本語', 2, 1)",
    ) == [("bc", "c", "ab", "bc", "b", "", "本")]
    assert run(con, "SELECT substr(NULL, 0), substr('abc', NULL), substr('abc', 0, NULL)") == [
        (None, None, None)
    ]
    assert run(con, "SELECT substr(s, 0, 1), substr(s, -2) FROM t WHERE s = 'x'") == [("", "")]


def test_array_max_and_min_are_null_when_an_element_is(con: duckdb.DuckDBPyConnection) -> None:
    assert run(
        con,
        "SELECT array_max(ARRAY[1, NULL, 3]), array_min(ARRAY[1, NULL, 3]), "
        "array_max(ARRAY[1, 3]), array_min(ARRAY['b', 'a']), "
        "array_max(CAST(ARRAY[] AS ARRAY(INTEGER)))",
    ) == [(None, None, 3, "a", None)]


def test_contains_is_null_when_not_found_beside_a_null(con: duckdb.DuckDBPyConnection) -> None:
    assert run(
        con,
        "SELECT contains(ARRAY[1, NULL], 2), contains(ARRAY[1, NULL], 1), "
        "contains(ARRAY[1, 2], 3), contains(ARRAY[1], NULL), contains(ARRAY['a', NULL], 'a')",
    ) == [(None, True, False, None, True)]


def test_the_zone_follows_a_column_through_a_union(con: duckdb.DuckDBPyConnection) -> None:
    union = (
        f"SELECT from_unixtime({T}, 'Asia/Tokyo') AS d UNION ALL "
        f"SELECT from_unixtime({T + 3600}, 'Asia/Tokyo')"
    )
    assert run(con, f"SELECT hour(d) FROM ({union}) u ORDER BY 1") == [(0,), (1,)]
    assert run(con, f"WITH u AS ({union}) SELECT CAST(d AS DATE) FROM u LIMIT 1") == [
        (dt.date(2026, 12, 2),)
    ]
    # At the top, each branch prints in its own zone.
    assert run(
        con,
        f"SELECT from_unixtime({T}, 'Asia/Tokyo') AS d UNION ALL SELECT from_unixtime({T})",
    ) == [("2026-12-02 00:00:00.000 Asia/Tokyo",), ("2026-12-01 15:00:00.000 UTC",)]
    # A column whose rows would be in different zones cannot be read as one.
    with pytest.raises(TranslationError, match="UNION, INTERSECT or EXCEPT"):
        run(
            con,
            f"SELECT hour(d) FROM (SELECT from_unixtime({T}, 'Asia/Tokyo') AS d "
            f"UNION SELECT from_unixtime({T})) u",
        )


def test_from_iso8601_timestamp_keeps_the_offset_of_its_string(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert run(
        con,
        "SELECT from_iso8601_timestamp('2020-05-11T11:15:05.055+01:00'), "
        "hour(from_iso8601_timestamp('2020-05-11T11:15:05-0530')), "
        "to_unixtime(from_iso8601_timestamp('2020-05-11T11:15:05+01:00'))",
    ) == [("2020-05-11 11:15:05.055 +01:00", 11, 1589192105.0)]
    # From a column, a zone per row is not kept: UTC strings answer, others fail.
    values = "(VALUES ('2020-05-11T11:15:05Z'), ('2020-05-11T12:00:00+00:00')) v(x)"
    assert run(con, f"SELECT hour(from_iso8601_timestamp(x)) FROM {values}") == [(11,), (12,)]
    assert run(
        con, f"SELECT hour(d) FROM (SELECT from_iso8601_timestamp(x) AS d FROM {values}) s"
    ) == [(11,), (12,)]
    with pytest.raises(duckdb.Error, match="from_iso8601_timestamp"):
        run(
            con,
            "SELECT hour(from_iso8601_timestamp(x)) "
            "FROM (VALUES ('2020-05-11T11:15:05+09:00')) v(x)",
        )
    # Given a zone, the instant is all that is read.
    assert run(
        con,
        "SELECT hour(from_iso8601_timestamp(x) AT TIME ZONE 'Asia/Tokyo') "
        "FROM (VALUES ('2020-05-11T11:15:05+09:00')) v(x)",
    ) == [(11,)]


def test_what_cannot_be_kept_is_refused_by_name(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(TranslationError, match="from_iso8601_timestamp_nanos"):
        run(con, "SELECT from_iso8601_timestamp_nanos('2020-05-11T11:15:05.123456789+01:00')")
    with pytest.raises(TranslationError, match=r"current_timestamp\(6\)"):
        run(con, "SELECT current_timestamp(6)")
    assert one(con, "SELECT current_timestamp(3) > TIMESTAMP '2020-01-01 00:00:00 UTC'") is True


def test_sign_keeps_its_arguments_type(con: duckdb.DuckDBPyConnection) -> None:
    assert run(con, "SELECT sign(-2.0), sign(2.5e0), sign(-7), sign(nan()), sign(NULL)") == [
        (Decimal("-1.0"), 1.0, -1, pytest.approx(math.nan, nan_ok=True), None)
    ]
    assert [type(v) for v in run(con, "SELECT sign(-2.0), sign(2.5e0), sign(-7)")[0]] == [
        Decimal,
        float,
        int,
    ]


def test_cosine_similarity_of_sparse_vectors(con: duckdb.DuckDBPyConnection) -> None:
    assert run(
        con,
        "SELECT cosine_similarity(MAP(ARRAY['a', 'b'], ARRAY[1.0, 1.0]), "
        "MAP(ARRAY['a', 'c'], ARRAY[2.0, 5e0])), "
        "cosine_distance(MAP(ARRAY['a'], ARRAY[1.0]), MAP(ARRAY['a'], ARRAY[2.0]))",
    ) == [(pytest.approx(2 / (math.sqrt(2) * math.sqrt(29))), 0.0)]


def test_the_zone_survives_window_functions(con: duckdb.DuckDBPyConnection) -> None:
    assert run(
        con,
        "SELECT first_value(from_unixtime(time, 'Asia/Tokyo')) OVER (ORDER BY time), "
        "hour(lag(from_unixtime(time, 'Asia/Tokyo')) OVER (ORDER BY time)) "
        "FROM t ORDER BY time LIMIT 2",
    ) == [
        ("2026-12-01 23:59:00.000 Asia/Tokyo", None),
        ("2026-12-01 23:59:00.000 Asia/Tokyo", 23),
    ]
