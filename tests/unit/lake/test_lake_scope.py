"""An account's share of the lake, tried with raw SQL (no translation, no checks on the
SQL): whatever a job's connection runs, it finds only its own account's data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import msgspec
import pyarrow as pa
import pytest

from tdedge.config import Settings
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.lake import Lake
from tdedge.query.session import Scope, Session
from tdedge.results.store import ResultFiles
from tests.unit.lake.test_lake import rejection

SECRET = "s3cr3t-of-account-one"


@pytest.fixture
def lake_settings(tmp_path: Path) -> Iterator[Settings]:
    """A lake with account 1's ``one`` (rows in Parquet files and inlined, and deleted
    ones), account 2's ``two``, and an import error carrying a secret."""
    settings = Settings(data_dir=str(tmp_path / "data"), lake_inlining_row_limit=10)
    lake = Lake.open(settings)
    try:
        many = pa.table({"time": list(range(500)), "v": [f"{SECRET}-{i}" for i in range(500)]})
        few = pa.table({"time": [1, 2], "v": [SECRET, SECRET], "x": [1.5, 2.5]})
        lake.commit(Batch([TableRows("one", "events", many)], [], {"s": 1}, []))
        lake.commit(Batch([TableRows("one", "events", few)], [], {"s": 2}, []))
        mine = pa.table({"time": [7], "v": ["mine"], "flag": [True]})
        lake.commit(Batch([TableRows("two", "mine", mine)], [], {"s": 3}, []))
        for seq, n in ((6, pa.array([1, 2**40])), (7, pa.array([2.5])), (8, pa.array([3.0]))):
            widened = pa.table({"time": [seq] * len(n), "n": n})
            lake.commit(Batch([TableRows("two", "wide", widened)], [], {"s": seq}, []))
        error = msgspec.structs.replace(
            rejection(4), database_name="one", table_name="events", account_id=1, record=SECRET
        )
        lake.commit(Batch([], [error], {"s": 4}, []))
    finally:
        lake.close()
    yield settings


@pytest.fixture
def session(lake_settings: Settings) -> Iterator[Session]:
    opened = Session(
        lake_settings, Scope(2, frozenset({"two"})), 1, ResultFiles(lake_settings.job_results_dir)
    )
    yield opened
    opened.close()


def test_the_account_reads_its_own_tables(session: Session) -> None:
    con = session.connection
    assert con.execute("SELECT time, v, flag FROM lake.two.mine").fetchall() == [(7, "mine", True)]
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    assert sorted(tables) == [("two", "mine"), ("two", "wide")]
    # Inlined rows of two schema versions, the column widened from BIGINT to DOUBLE.
    wide = con.execute("SELECT time, n FROM lake.two.wide ORDER BY time, n").fetchall()
    assert wide == [(6, 1.0), (6, float(2**40)), (7, 2.5), (8, 3.0)]


def test_the_copy_keeps_every_kind_of_row(lake_settings: Settings) -> None:
    """Rows in files, inlined rows of a later schema version, and a widened column."""
    opened = Session(
        lake_settings, Scope(1, frozenset({"one"})), 1, ResultFiles(lake_settings.job_results_dir)
    )
    try:
        con = opened.connection
        count, inlined, x = con.execute(
            "SELECT count(*), count(*) FILTER (v = ?), sum(x) FROM lake.one.events", [SECRET]
        ).fetchone() or (0, 0, 0)
        assert (count, inlined, x) == (502, 2, 4.0)
    finally:
        opened.close()


def _hostile(data: Path) -> list[str]:
    lake = data / "lake"
    return [
        "SELECT * FROM lake.one.events",
        "SELECT * FROM one.events",
        f"SELECT * FROM '{lake}/data/one/events/*.parquet'",
        f'SELECT * FROM "{lake}/data/one/**/*.parquet"',
        f"SELECT * FROM read_parquet('{lake}/data/**/*.parquet')",
        f"SELECT * FROM parquet_scan('{lake}/data/one/events/*.parquet')",
        f"SELECT * FROM '{lake}/data/two/../one/events/*.parquet'",
        f"SELECT * FROM glob('{lake}/data/*')",
        f"SELECT * FROM glob('{data}/**')",
        f"SELECT * FROM read_text('{lake}/catalog.sqlite')",
        f"SELECT * FROM read_blob('{data}/control.sqlite')",
        f"SELECT * FROM read_json_auto('{data}/run/*.json')",
        f"SELECT * FROM read_csv('{data}/journal/*')",
        f"SELECT * FROM sqlite_scan('{lake}/catalog.sqlite', 'ducklake_inlined_data_1_1')",
        f"ATTACH '{lake}/catalog.sqlite' AS c (TYPE sqlite)",
        f"ATTACH '{data}/control.sqlite' AS c",
        f"ATTACH 'ducklake:sqlite:{lake}/catalog.sqlite' AS c",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_schema",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_table",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_data_file",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_column",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_inlined_data_tables",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_snapshot_changes",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_columns()",
        "SELECT * FROM duckdb_schemas()",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.columns",
        "SELECT * FROM information_schema.schemata",
        "SELECT * FROM lake.tdedge_system.import_errors",
        "SELECT * FROM query_table('lake.one.events')",
        "SELECT * FROM query('SELECT * FROM lake.one.events')",
        "WITH x AS (SELECT * FROM lake.one.events) SELECT * FROM x",
        "SELECT (SELECT max(v) FROM lake.one.events)",
        "SELECT * FROM ducklake_snapshots('lake')",
        "SELECT * FROM ducklake_table_info('lake')",
        "SELECT * FROM ducklake_list_files('lake', 'events', schema => 'one')",
        "SELECT current_setting('allowed_directories')",
        "SELECT * FROM duckdb_settings()",
        "SET allowed_directories = ['/']",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "INSTALL sqlite",
        f"LOAD '{data}/x.duckdb_extension'",
        f"COPY (SELECT 1) TO '{lake}/data/one/x.parquet'",
    ]


def test_nothing_of_another_account_is_reachable(session: Session, lake_settings: Settings) -> None:
    con = session.connection
    for sql in _hostile(lake_settings.root.resolve()):
        try:
            found = con.execute(sql).fetchall()
        except duckdb.Error:
            continue
        text = repr(found)
        assert SECRET not in text, sql
        assert "'one'" not in text and "/one/" not in text and "tdedge_system" not in text, sql
    # Nothing it ran changed what it may do.
    assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)


def test_a_refresh_brings_new_rows_and_tables(lake_settings: Settings, session: Session) -> None:
    lake = Lake.open(lake_settings)
    try:
        more = pa.table({"time": [8], "v": ["later"], "flag": [False]})
        other = pa.table({"time": [9], "v": [SECRET]})
        lake.commit(
            Batch(
                [
                    TableRows("two", "mine", more),
                    TableRows("two", "new", more),
                    TableRows("one", "events", other),
                ],
                [],
                {"s": 5},
                [],
            )
        )
    finally:
        lake.close()
    assert session.refresh()
    con = session.connection
    assert con.execute("SELECT count(*) FROM lake.two.mine").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM lake.two.new").fetchone() == (1,)
    assert not session.refresh()  # the catalog has not moved since
