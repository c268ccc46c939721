"""The lake against a real DuckLake (DuckDB, SQLite catalog, Parquet files) in tmp_path."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake.batch import Batch, Rejection, TableRows
from tdedge.lake.extensions import EXTENSIONS, connect, extension_path
from tdedge.lake.lake import Lake

NOW = 1_750_000_000.0


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), **kw)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    opened = Lake.open(settings(tmp_path))
    yield opened
    opened.close()


def rows(table: str, database: str, **columns: list[Any]) -> TableRows:
    return TableRows(database, table, pa.table(columns))


def rejection(seq: int, reason: str = "unknown_key", at: int = 1) -> Rejection:
    return Rejection(
        time=at,
        received_ms=seq * 1000,
        reason=reason,
        detail="d",
        door="legacy",
        database_name="db",
        table_name="t",
        key_id="0123456789ab",
        account_id=None,
        record='{"a":1}',
        journal_shard="s0",
        journal_seq=seq,
    )


def count(lake: Lake, sql: str) -> int:
    return int(lake.query(sql).rows[0][0])


def parquet_files(s: Settings) -> int:
    return len(list(s.lake_data_dir.rglob("*.parquet")))


def test_extensions_load_from_their_packages_without_downloading() -> None:
    for name in EXTENSIONS:
        path = extension_path(name)
        assert path.is_file() and path.name == f"{name}.duckdb_extension"
    con = connect()
    loaded = dict(con.execute("SELECT extension_name, loaded FROM duckdb_extensions()").fetchall())
    settings_ = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() "
            "WHERE name IN ('autoinstall_known_extensions', 'autoload_known_extensions')"
        ).fetchall()
    )
    con.close()
    assert all(loaded[name] for name in EXTENSIONS)
    assert settings_ == {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }


def test_catalog_is_in_wal_mode(lake: Lake, tmp_path: Path) -> None:
    con = sqlite3.connect(settings(tmp_path).lake_catalog_file)
    (mode,) = con.execute("PRAGMA journal_mode").fetchone()
    con.close()
    assert mode == "wal"


def test_commit_writes_tables_errors_and_positions_together(lake: Lake) -> None:
    assert lake.positions() == {}
    lake.commit(
        Batch(
            tables=[
                rows("a", "db", time=[1, 2], n=[10, 20]),
                rows("b", "db2", time=[3], s=["x"]),
            ],
            rejections=[rejection(7)],
            positions={"s0": 7, "s1": 3},
        )
    )
    assert lake.positions() == {"s0": 7, "s1": 3}
    assert lake.query("SELECT time, n FROM db.a ORDER BY time").rows == [(1, 10), (2, 20)]
    assert lake.query("SELECT * FROM b", "db2").rows == [(3, "x")]
    assert lake.columns("db", "a") == {"time": "BIGINT", "n": "BIGINT"}
    assert lake.columns("db", "missing") is None
    errors = lake.import_errors(10)
    assert errors.rows[0][errors.columns.index("reason")] == "unknown_key"
    assert errors.rows[0][errors.columns.index("journal_seq")] == 7
    # Positions only move forward per shard; an untouched shard keeps its value.
    lake.commit(Batch(positions={"s0": 9}))
    assert lake.positions() == {"s0": 9, "s1": 3}


def test_a_failed_commit_leaves_nothing_behind(lake: Lake) -> None:
    lake.commit(Batch([rows("a", "db", time=[1], s=["text"])], positions={"s0": 1}))
    good = rows("b", "db", time=[2], n=[1])
    # DuckLake refuses VARCHAR → BIGINT: the second table fails inside the transaction.
    bad = rows("a", "db", time=[3], s=[5])
    with pytest.raises(LakeError):
        lake.commit(Batch([good, bad], [rejection(2)], positions={"s0": 2}))
    assert lake.positions() == {"s0": 1}
    assert lake.columns("db", "b") is None
    assert lake.tables("db") == ["a"]
    assert count(lake, "SELECT count(*) FROM tdedge_system.import_errors") == 0
    # The lake is usable afterwards, and its cached view of the tables is right.
    lake.commit(Batch([good], positions={"s0": 2}))
    assert lake.query("SELECT n FROM db.b").rows == [(1,)]
    assert lake.positions() == {"s0": 2}


def test_tables_are_created_and_evolve(lake: Lake) -> None:
    lake.commit(Batch([rows("t", "db", time=[1], n=[1])]))
    lake.commit(Batch([rows("t", "db", time=[2], n=[2.5], extra=["e"])]))
    lake.commit(Batch([rows("t", "db", time=[3], flag=[True])]))
    assert lake.columns("db", "t") == {
        "time": "BIGINT",
        "n": "DOUBLE",
        "extra": "VARCHAR",
        "flag": "BOOLEAN",
    }
    got = lake.query("SELECT time, n, extra, flag FROM db.t ORDER BY time").rows
    assert got == [(1, 1.0, None, None), (2, 2.5, "e", None), (3, None, None, True)]


def test_rows_cannot_go_to_the_system_schema(lake: Lake) -> None:
    with pytest.raises(LakeError):
        lake.commit(Batch([rows("x", "tdedge_system", time=[1])]))


def test_compaction_merges_files_and_keeps_rows(tmp_path: Path) -> None:
    s = settings(tmp_path, lake_inlining_row_limit=0, lake_retention_s=0.0)
    lake = Lake.open(s)
    for i in range(6):
        lake.commit(Batch([rows("t", "db", time=[i, i], n=[i, i + 1])], positions={"s0": i + 1}))
    before = parquet_files(s)
    assert before >= 6
    lake.compact(NOW * 2)  # far in the future: every old snapshot and file can go
    after = parquet_files(s)
    assert after < before
    assert count(lake, "SELECT count(*) FROM db.t") == 12
    assert count(lake, "SELECT sum(n) FROM db.t") == sum(2 * i + 1 for i in range(6))
    # Superseded positions are pruned; the position itself is unchanged.
    assert count(lake, "SELECT count(*) FROM tdedge_system.journal_positions") == 1
    assert lake.positions() == {"s0": 6}
    lake.close()


def test_compaction_keeps_the_snapshots_younger_than_the_retention(tmp_path: Path) -> None:
    """Time travel reaches back ``lake_retention_s``: a pass expires older snapshots
    only (it expired every snapshot but the latest, whatever their age)."""
    lake = Lake.open(settings(tmp_path, lake_retention_s=600.0))
    latest = "SELECT max(snapshot_id) FROM ducklake_snapshots('lake')"
    lake.commit(Batch([rows("t", "db", time=[0], n=[0])], positions={"s0": 1}))
    one_row = count(lake, latest)
    for i in range(1, 4):
        lake.commit(Batch([rows("t", "db", time=[i], n=[i])], positions={"s0": i + 1}))
    lake.compact(time.time())
    assert count(lake, f"SELECT count(*) FROM db.t AT (VERSION => {one_row})") == 1
    lake.compact(time.time() + 601)  # all of them older now: every one but the latest goes
    assert count(lake, "SELECT count(*) FROM ducklake_snapshots('lake')") == 1
    assert count(lake, "SELECT count(*) FROM db.t") == 4
    lake.close()


def test_compaction_flushes_inlined_rows(tmp_path: Path) -> None:
    s = settings(tmp_path, lake_retention_s=0.0)
    lake = Lake.open(s)
    for i in range(5):
        lake.commit(Batch([rows("t", "db", time=[i], n=[i])], positions={"s0": i + 1}))
    assert parquet_files(s) == 0  # small commits stay in the catalog
    lake.compact(NOW * 2)
    assert parquet_files(s) >= 1
    assert count(lake, "SELECT count(*) FROM db.t") == 5
    lake.close()


def test_read_only_lake_sees_commits_and_refuses_writes(lake: Lake, tmp_path: Path) -> None:
    reader = Lake.open(settings(tmp_path), read_only=True)
    lake.commit(Batch([rows("t", "db", time=[1], n=[1])], positions={"s0": 1}))
    assert reader.query("SELECT n FROM t", "db").rows == [(1,)]
    assert reader.positions() == {"s0": 1}
    lake.commit(Batch([rows("t", "db", time=[2], n=[2])], positions={"s0": 2}))
    assert count(reader, "SELECT count(*) FROM db.t") == 2
    assert reader.tables("db") == ["t"]
    assert reader.databases() == ["db"]
    with pytest.raises(LakeError):
        reader.commit(Batch(positions={"s0": 3}))
    with pytest.raises(LakeError):
        reader.query("INSERT INTO db.t (time) VALUES (3)")
    reader.close()


def test_read_only_queries_cannot_touch_other_files(lake: Lake, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    reader = Lake.open(settings(tmp_path), read_only=True)
    with pytest.raises(LakeError, match="disabled"):
        reader.query(f"SELECT * FROM read_csv('{secret}')")
    with pytest.raises(LakeError):
        reader.query("SET enable_external_access = true")
    with pytest.raises(LakeError):
        reader.query(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    assert not (tmp_path / "out.csv").exists()
    reader.close()


def test_reader_survives_a_flush_of_inlined_data_after_a_schema_change(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, lake_retention_s=0.0)
    lake = Lake.open(s)
    reader = Lake.open(s, read_only=True)
    lake.commit(Batch([rows("t", "db", time=[1], n=[1])]))
    assert count(reader, "SELECT count(*) FROM db.t") == 1
    lake.commit(Batch([rows("t", "db", time=[2], n=[2.5])]))  # widen: new schema version
    assert count(reader, "SELECT count(*) FROM db.t") == 2
    lake.compact(NOW * 2)  # flushes and drops the old inlined-data table
    assert reader.query("SELECT n FROM db.t ORDER BY time").rows == [(1.0,), (2.5,)]
    reader.close()
    lake.close()


def test_read_only_open_sets_up_a_fresh_lake(tmp_path: Path) -> None:
    reader = Lake.open(settings(tmp_path), read_only=True)
    assert reader.positions() == {}
    assert reader.import_errors(5).rows == []
    assert reader.databases() == []
    reader.close()


def test_query_errors_are_lake_errors(lake: Lake) -> None:
    with pytest.raises(LakeError):
        lake.query("SELECT * FROM nowhere")
    with pytest.raises(LakeError, match="does not exist"):
        lake.query("SELECT 1", "nodb")
    assert lake.query("SELECT 1 AS one, 'x' AS s").columns == ["one", "s"]
    assert lake.query("SELECT 1 AS one").types == ["INTEGER"]


def test_query_returns_timestamps_with_time_zone(lake: Lake) -> None:
    result = lake.query("SELECT to_timestamp(0) AS t")
    assert result.types == ["TIMESTAMP WITH TIME ZONE"]
    assert result.rows[0][0].timestamp() == 0


def test_import_errors_newest_first_with_limit(lake: Lake) -> None:
    lake.commit(Batch(rejections=[rejection(1, at=10), rejection(2, "revoked_key", at=30)]))
    lake.commit(Batch(rejections=[rejection(3, "foreign_key", at=20)]))
    errors = lake.import_errors(2)
    reason = errors.columns.index("reason")
    assert [r[reason] for r in errors.rows] == ["revoked_key", "foreign_key"]
    assert errors.columns[:3] == ["time", "received_ms", "reason"]


def test_ensure_schema_creates_an_empty_database(lake: Lake) -> None:
    lake.ensure_schema("Sales")
    assert lake.databases() == ["sales"]
    assert lake.tables("sales") == []
    lake.ensure_schema("sales")  # idempotent


def test_two_writers_in_different_connections_both_get_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite can refuse a DuckLake commit at once while another writer holds the lock."""
    s = settings(tmp_path)
    loader_side, cli_side = Lake.open(s), Lake.open(s)
    failures: list[BaseException] = []

    def create_schemas() -> None:
        try:
            for i in range(15):
                cli_side.ensure_schema(f"other{i}")
        except BaseException as e:  # reported below
            failures.append(e)

    thread = threading.Thread(target=create_schemas)
    thread.start()
    for i in range(15):
        loader_side.commit(
            Batch([rows("t", "db", time=[i] * 200, n=list(range(200)))], positions={"s0": i + 1})
        )
    thread.join()
    assert failures == []
    assert loader_side.positions() == {"s0": 15}
    assert count(loader_side, "SELECT count(*) FROM db.t") == 15 * 200
    assert len(loader_side.databases()) == 16
    loader_side.close()
    cli_side.close()


def test_compaction_expires_import_errors_past_their_retention(lake: Lake) -> None:
    day = 86_400
    old, recent = rejection(1, at=int(NOW) - 31 * day), rejection(2, at=int(NOW) - day)
    lake.commit(Batch([], [old, recent], {"s0": 2}))
    lake.compact(NOW)
    kept = lake.query("SELECT journal_seq FROM tdedge_system.import_errors").rows
    assert [r[0] for r in kept] == [2]


def test_strings_costly_to_inline_are_written_as_parquet_unchanged(tmp_path: Path) -> None:
    """NULs and single quotes past the commit's budget go to a Parquet file (inlining
    them costs more than linearly), in the same transaction; other rows stay inlined."""
    s = settings(tmp_path, lake_inlining_max_escapes=100)
    nuls = "a\x00b" + "\x00" * 70_000
    quotes = "it's " * 20_000
    with Lake.open(s) as lake:
        lake.commit(
            Batch(
                tables=[
                    rows("small", "db", a=["don't", "x\x00y"]),
                    rows("nuls", "db", a=[nuls]),
                ],
                rejections=[msgspec.structs.replace(rejection(1), record=quotes)],
                positions={"s0": 1},
            )
        )
        assert parquet_files(s) == 2  # the NULs and the import error, not "small"
        assert lake.query("SELECT a FROM db.small ORDER BY a").rows == [("don't",), ("x\x00y",)]
        assert lake.query("SELECT a FROM db.nuls").rows == [(nuls,)]
        assert lake.import_errors().rows[0][9] == quotes
        assert lake.positions() == {"s0": 1}
