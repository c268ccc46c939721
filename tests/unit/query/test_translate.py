"""Presto/Trino and Hive SQL → DuckDB, run against a real DuckDB."""

from __future__ import annotations

import duckdb
import pytest

from tdedge.query.functions import register
from tdedge.query.translate import Context, TranslationError, translate

SCHEMA = {"db1": {"t": {"time": "BIGINT", "a": "BIGINT", "b": "BIGINT", "d": "DOUBLE"}}}


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    register(c)  # as a job's session does: translated SQL calls its functions
    c.execute("ATTACH ':memory:' AS lake")
    c.execute("CREATE SCHEMA lake.db1")
    c.execute(
        "CREATE TABLE lake.db1.t AS "
        "SELECT * FROM (VALUES (0, 7, 2, 1.5::DOUBLE)) v(time, a, b, d)"  # as SCHEMA says
    )
    c.execute("USE lake.db1")
    return c


def run(
    con: duckdb.DuckDBPyConnection, sql: str, engine: str = "presto"
) -> list[tuple[object, ...]]:
    return con.execute(translate(sql, Context(0, engine), "db1", SCHEMA)).fetchall()


def test_integer_division_stays_integer_as_in_presto(con: duckdb.DuckDBPyConnection) -> None:
    assert run(con, "SELECT a / b, d / b, a / 2 FROM t") == [(3, 0.75, 3)]


def test_unnamed_columns_are_named_like_presto_and_hive(con: duckdb.DuckDBPyConnection) -> None:
    presto = translate("SELECT count(*), max(a) AS a FROM t", Context(0, "presto"), "db1", SCHEMA)
    hive = translate("SELECT count(*), max(a) AS a FROM t", Context(0, "hive"), "db1", SCHEMA)
    assert con.execute(presto).description[0][0] == "_col0"
    assert con.execute(presto).description[1][0] == "a"
    assert con.execute(hive).description[0][0] == "_c0"


def test_qualified_and_unqualified_table_names(con: duckdb.DuckDBPyConnection) -> None:
    assert run(con, "SELECT count(1) FROM db1.t") == [(1,)]
    assert run(con, "SELECT count(1) FROM t") == [(1,)]


def test_presto_functions(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(
        con,
        "SELECT date_format(from_unixtime(time), '%Y-%m-%d %H:%i:%s'), "
        "regexp_like('abc', 'b'), cardinality(ARRAY[1, 2]) FROM t",
    )
    assert rows == [("1970-01-01 00:00:00", True, 2)]
    assert run(con, "SELECT approx_distinct(a) FROM t") == [(1,)]


def test_pytd_header_comments_are_ignored(con: duckdb.DuckDBPyConnection) -> None:
    sql = (
        "-- client: pytd/2.4.0\n-- read_td_query\n"
        "-- set session join_distribution_type = 'BROADCAST'\nSELECT a FROM t"
    )
    assert run(con, sql) == [(7,)]


def test_hive_query(con: duckdb.DuckDBPyConnection) -> None:
    assert run(con, "SELECT `a`, COUNT(1) FROM t GROUP BY `a`", engine="hive") == [(7, 1)]


def test_without_schema_the_query_still_runs(con: duckdb.DuckDBPyConnection) -> None:
    sql = translate("SELECT a FROM t WHERE TD_TIME_RANGE(time, 0, 1)", Context(0))
    assert con.execute(sql).fetchall() == [(7,)]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", "syntax error"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT TD_TIME_RANGE(time) FROM t", "takes 2 to 4 arguments"),
    ],
)
def test_refused_queries(sql: str, message: str) -> None:
    with pytest.raises(TranslationError, match=message):
        translate(sql, Context(0))


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM other.t", "database other does not exist"),
        ("SELECT * FROM lake.other.t", "database other does not exist"),
        ("SELECT * FROM memory.main.t", "unknown catalog"),
        ("SELECT * FROM read_parquet('/x/*.parquet')", "table functions"),
        ("CREATE TABLE x AS SELECT 1", "only queries"),
        ("INSERT INTO t SELECT * FROM t", "only queries"),
    ],
)
def test_other_databases_and_files_are_out_of_reach(sql: str, message: str) -> None:
    with pytest.raises(TranslationError, match=message):
        translate(sql, Context(0), "db1", SCHEMA, allowed=frozenset({"db1"}))


def test_own_databases_and_ctes_are_in_reach(con: duckdb.DuckDBPyConnection) -> None:
    sql = "WITH w AS (SELECT a FROM db1.t) SELECT a FROM w"
    translated = translate(sql, Context(0), "db1", SCHEMA, allowed=frozenset({"db1"}))
    assert con.execute(translated).fetchall() == [(7,)]
