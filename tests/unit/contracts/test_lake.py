"""The lake's contract, on every backend: the embedded one (SQLite catalog, files in the
data dir) and the shared one (PostgreSQL catalog, files on a real S3 server).

Tables are created, appended to and widened; they read back; query jobs see only their
account's share; compaction flushes inlined rows into files; retention and drops delete
rows; the console's change feed finds the rows committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
import pytest

from tdedge.config import Settings
from tdedge.lake import location
from tdedge.lake.batch import Batch, Rejection, TableRows
from tdedge.lake.catalog import LAKE
from tdedge.lake.feed import read_changes
from tdedge.lake.lake import Lake
from tdedge.query.session import Scope, Session
from tdedge.results.store import ResultFiles
from tests import postgres, seaweed

NOW = 1_750_000_000.0
SECRET = "s3cr3t-of-account-one"
BACKENDS = ["embedded", "postgresql-s3"]


class Backend:
    def __init__(self, settings: Settings, s3: seaweed.SeaweedFS | None, bucket: str) -> None:
        self.settings = settings
        self.s3 = s3
        self.bucket = bucket

    def files(self, database: str) -> list[str]:
        """The Parquet files of a database, wherever the lake keeps them."""
        if self.s3 is not None:
            found = self.s3.objects(self.bucket, f"lake/{database}")
        else:
            found = [str(p) for p in (self.settings.lake_data_dir / database).rglob("*")]
        return [f for f in found if f.endswith(".parquet")]


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    data_dir = str(tmp_path / "data")
    if request.param == "embedded":
        return Backend(Settings(data_dir=data_dir, lake_inlining_row_limit=10), None, "")
    pg: postgres.Postgres = request.getfixturevalue("postgres_server")
    s3: seaweed.SeaweedFS = request.getfixturevalue("s3_server")
    for name, value in s3.environ().items():
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    settings = Settings(
        data_dir=data_dir,
        lake_inlining_row_limit=10,
        lake_catalog=pg.new_database(),
        lake_data=f"s3://{bucket}/lake/",
    )
    return Backend(settings, s3, bucket)


@pytest.fixture
def lake(backend: Backend) -> Iterator[Lake]:
    opened = Lake.open(backend.settings)
    yield opened
    opened.close()


def rows(database: str, table: str, **columns: list[Any]) -> TableRows:
    return TableRows(database, table, pa.table(columns))


def rejection(seq: int, *, at: int = 1, record: str = '{"a":1}') -> Rejection:
    return Rejection(
        time=at,
        received_ms=seq * 1000,
        reason="unknown_key",
        detail="d",
        door="legacy",
        database_name="one",
        table_name="events",
        key_id="0123456789ab",
        account_id=1,
        record=record,
        journal_shard="s0",
        journal_seq=seq,
    )


def scalar(lake: Lake, sql: str) -> Any:
    return lake.query(sql).rows[0][0]


def test_tables_are_created_appended_widened_and_read(backend: Backend, lake: Lake) -> None:
    many = rows("one", "events", time=list(range(50)), v=[f"v{i}" for i in range(50)])
    lake.commit(Batch([many], [], {"s0": 50}))
    # Few rows (inlined in the catalog) with a new column and a widened one.
    few = rows("one", "events", time=[100, 101], v=["a", "b"], x=[1.5, 2.5])
    lake.commit(Batch([few], [rejection(51)], {"s0": 52}))
    assert lake.positions() == {"s0": 52}
    assert lake.columns("one", "events") == {"time": "BIGINT", "v": "VARCHAR", "x": "DOUBLE"}
    assert scalar(lake, "SELECT count(*) FROM one.events") == 52
    assert scalar(lake, "SELECT sum(x) FROM one.events") == 4.0
    assert scalar(lake, "SELECT count(*) FROM one.events WHERE x IS NULL") == 50
    assert lake.import_errors(10).rows[0][0] is not None
    assert len(backend.files("one")) >= 1
    # Another process reads what was committed.
    reader = Lake.open(backend.settings, read_only=True)
    try:
        assert scalar(reader, "SELECT count(*) FROM one.events") == 52
        assert reader.tables("one") == ["events"]
    finally:
        reader.close()


def test_compaction_flushes_inlined_rows_into_files(backend: Backend, lake: Lake) -> None:
    for seq in range(1, 4):
        lake.commit(Batch([rows("one", "events", time=[seq], v=[f"r{seq}"])], [], {"s0": seq}))
    assert backend.files("one") == []  # all inlined so far
    lake.compact(NOW)
    assert len(backend.files("one")) >= 1
    found = lake.query("SELECT v FROM one.events ORDER BY time").rows
    assert found == [("r1",), ("r2",), ("r3",)]


def test_retention_and_drops_delete_rows(backend: Backend, lake: Lake) -> None:
    lake.commit(Batch([rows("one", "events", time=[10, 20, 30], v=["a", "b", "c"])], [], {}))
    lake.commit(Batch([rows("one", "gone", time=[1], v=["x"])], [], {}))
    for _ in lake.compaction(NOW, expiries={("one", "events"): 25}):
        pass
    assert lake.query("SELECT time FROM one.events ORDER BY time").rows == [(30,)]
    # Import errors older than their retention go.
    old = rejection(1, record="old")
    lake.commit(Batch([], [msgspec.structs.replace(old, received_ms=1000)], {}))
    lake.compact(NOW)
    assert scalar(lake, "SELECT count(*) FROM tdedge_system.import_errors") == 0
    with lake._con.cursor() as cursor:  # the REST API's drop is plain DuckLake DDL
        cursor.execute(f"DROP TABLE {LAKE}.one.gone")
    lake.reload()
    assert lake.tables("one") == ["events"]


def test_the_change_feed_finds_committed_rows(backend: Backend, lake: Lake) -> None:
    lake.commit(Batch([rows("one", "events", time=[1, 2], v=["a", "b"])], [], {}))
    lake.commit(Batch([rows("two", "other", time=[3], v=["c"])], [rejection(9)], {}))
    reader = Lake.open(backend.settings, read_only=True)
    try:
        changes = read_changes(reader._con, None, lambda d, t: d == "one", account_id=1, limit=100)
    finally:
        reader.close()
    kinds = sorted((e.reason or "row", e.database, e.table) for e in changes.events)
    assert kinds == [
        ("row", "one", "events"),
        ("row", "one", "events"),
        ("unknown_key", "one", "events"),
    ]
    assert set(changes.inserted) == {("one", "events")}


@pytest.fixture
def two_accounts(backend: Backend) -> Backend:
    lake = Lake.open(backend.settings)
    try:
        many = pa.table({"time": list(range(50)), "v": [f"{SECRET}-{i}" for i in range(50)]})
        lake.commit(Batch([TableRows("one", "events", many)], [], {"s": 1}))
        few = pa.table({"time": [1, 2], "v": [SECRET, SECRET]})
        lake.commit(Batch([TableRows("one", "events", few)], [], {"s": 2}))
        mine = pa.table({"time": [7], "v": ["mine"], "flag": [True]})
        lake.commit(Batch([TableRows("two", "mine", mine)], [], {"s": 3}))
        lake.commit(Batch([], [rejection(4, record=SECRET)], {"s": 4}))
    finally:
        lake.close()
    return backend


def _hostile(backend: Backend) -> list[str]:
    data = location.data_path(backend.settings)
    root = backend.settings.root.resolve()
    queries = [
        "SELECT * FROM lake.one.events",
        f"SELECT * FROM '{data}one/**/*.parquet'",
        f"SELECT * FROM read_parquet('{data}**/*.parquet')",
        f"SELECT * FROM read_parquet('{data}two/../one/**/*.parquet')",
        f"SELECT * FROM glob('{data}*')",
        f"SELECT * FROM glob('{data}one/**')",
        f"SELECT * FROM read_blob('{root}/control.sqlite')",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_table",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_data_file",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_snapshot_changes",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_schemas()",
        "SELECT * FROM lake.tdedge_system.import_errors",
        "SELECT * FROM ducklake_table_info('lake')",
        "SELECT * FROM ducklake_snapshots('lake')",
        "SET enable_external_access = true",
        "INSTALL postgres",
        "LOAD postgres",
        "LOAD sqlite",
        f"COPY (SELECT 1) TO '{data}one/x.parquet'",
    ]
    if backend.settings.lake_catalog_postgres:
        dsn = location.postgres_dsn(backend.settings.lake_catalog)
        queries += [
            f"ATTACH '{dsn}' AS c (TYPE postgres)",
            f"ATTACH 'ducklake:postgres:{dsn}' AS c",
            f"SELECT * FROM postgres_scan('{dsn}', 'public', 'ducklake_table')",
            f"SELECT * FROM postgres_query('{dsn}', 'SELECT * FROM ducklake_table')",
        ]
    if backend.s3 is not None:
        # The same files by the S3 server's plain URL.
        url = f"{backend.s3.endpoint}/{backend.bucket}/lake/one/"
        queries += [f"SELECT * FROM read_parquet('{url}*.parquet')"]
    return queries


def test_a_job_sees_only_its_accounts_share(two_accounts: Backend) -> None:
    settings = two_accounts.settings
    session = Session(
        settings, Scope(2, frozenset({"two"})), 1, ResultFiles(settings.job_results_dir)
    )
    try:
        con = session.connection
        assert con.execute("SELECT time, v, flag FROM lake.two.mine").fetchall() == [
            (7, "mine", True)
        ]
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        assert tables == [("two", "mine")]
        for sql in _hostile(two_accounts):
            try:
                found = con.execute(sql).fetchall()
            except duckdb.Error:
                continue
            text = repr(found)
            assert SECRET not in text, sql
            assert "'one'" not in text and "/one/" not in text, sql
            assert "tdedge_system" not in text, sql
        setting = con.execute("SELECT current_setting('enable_external_access')").fetchone()
        assert setting == (False,)
        # A refresh brings the account's new rows, and nothing of the other's.
        lake = Lake.open(settings)
        try:
            lake.commit(Batch([rows("two", "mine", time=[8], v=["more"], flag=[False])], [], {}))
            lake.commit(Batch([rows("one", "events", time=[9], v=[SECRET])], [], {}))
        finally:
            lake.close()
        assert session.refresh()
        assert con.execute("SELECT count(*) FROM lake.two.mine").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (1,)
    finally:
        session.close()
    # The owner reads its rows, inlined and in files, through its own share.
    owner = Session(
        settings, Scope(1, frozenset({"one"})), 2, ResultFiles(settings.job_results_dir)
    )
    try:
        count = owner.connection.execute("SELECT count(*) FROM lake.one.events").fetchone()
        assert count == (53,)
    finally:
        owner.close()


def test_the_cli_acts_on_the_lake_its_options_name(backend: Backend) -> None:
    from click.testing import CliRunner

    from tdedge.cli import main

    s = backend.settings
    where = ["--data-dir", s.data_dir]
    if not s.lake_embedded:
        where += ["--lake-catalog", s.lake_catalog, "--lake-data", s.lake_data]
    runner = CliRunner()
    made = runner.invoke(main, ["db", "create", *where, "shop"])
    assert made.exit_code == 0, made.output
    lake = Lake.open(s)
    try:
        lake.commit(
            Batch(
                [rows("shop", "orders", time=[1, 2, 3], v=["a", "b", "c"])],
                [rejection(1, record='{"bad":"one"}')],
                {},
            )
        )
    finally:
        lake.close()
    errors = runner.invoke(main, ["errors", *where, "--format", "json"])
    assert errors.exit_code == 0, errors.output
    assert "unknown_key" in errors.output and "bad" in errors.output
    tailed = runner.invoke(main, ["tail", *where, "--once", "-d", "shop", "--format", "json"])
    assert tailed.exit_code == 0, tailed.output
    assert tailed.output.count('"orders"') == 3, tailed.output
    found = runner.invoke(
        main, ["query", *where, "--format", "csv", "SELECT count(*) AS n FROM shop.orders"]
    )
    assert found.exit_code == 0, found.output
    assert found.output.splitlines() == ["n", "3"]
    dropped = runner.invoke(main, ["table", "drop", *where, "--yes", "shop", "orders"])
    assert dropped.exit_code == 0, dropped.output
    lake = Lake.open(s)
    try:
        assert lake.tables("shop") == []
    finally:
        lake.close()
