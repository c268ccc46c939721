"""A backup of a lake whose rows are in a Parquet file and in the catalog, some of them
deleted, restored elsewhere: the same rows, and the journal resumes after the lake."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tdedge.backup import BackupError, backup, referenced_files, restore
from tdedge.config import Settings
from tdedge.control.store import ControlStore
from tdedge.journal.sqlite import _connect, shard_path
from tdedge.lake.batch import Batch
from tdedge.lake.lake import Lake
from tests.unit.lake.test_lake import rows


def test_backup_and_restore_carry_files_inlined_rows_and_deletions(tmp_path: Path) -> None:
    source = Settings(data_dir=str(tmp_path / "source"))
    ControlStore.open(source.control_db).close()
    with Lake.open(source) as lake:
        big = list(range(500))  # over the inlining limit: a Parquet file
        lake.commit(Batch([rows("t", "db", time=big, n=big)], (), {"shard-00": 7}))
        lake.commit(Batch([rows("t", "db", time=[1000], n=[1000])], (), {"shard-00": 9}))
        lake.query("DELETE FROM lake.db.t WHERE n < 100")  # a deletion file
    files = [str(p) for p, live in referenced_files(source.lake_catalog_file) if live]
    assert [f for f in files if f.startswith("db/t/") and f.endswith(".parquet")]

    saved = tmp_path / "backup"
    manifest = backup(source, saved)
    assert any(f.path.startswith("lake/data/db/t/") for f in manifest.files)
    with pytest.raises(BackupError, match="not empty"):
        backup(source, saved)

    target = Settings(data_dir=str(tmp_path / "restored"))
    restore(saved, target)
    assert oct(os.stat(target.root).st_mode & 0o777) == "0o700"
    with Lake.open(target, read_only=True) as lake:
        found = lake.query("SELECT count(*), min(n), max(n) FROM db.t").rows
    assert found == [(401, 100, 1000)]
    conn = _connect(shard_path(target.journal_dir, "shard-00"))
    try:
        seq = conn.execute(
            "INSERT INTO journal (received_ms, n, envelopes) VALUES (0, 1, x'') RETURNING seq"
        ).fetchone()[0]
    finally:
        conn.close()
    assert seq == 10, "a new journal row must come after the lake's position"
    catalog = sqlite3.connect(target.lake_catalog_file)
    (path,) = catalog.execute(
        "SELECT value FROM ducklake_metadata WHERE key = 'data_path'"
    ).fetchone()
    catalog.close()
    assert path == str(target.lake_data_dir.absolute()) + "/"


@pytest.mark.parametrize(
    ("catalog", "data"), [("postgresql://u@db/lake", ""), ("", "s3://bucket/lake/")]
)
def test_backup_refuses_a_lake_on_postgresql_or_s3(tmp_path: Path, catalog: str, data: str) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), lake_catalog=catalog, lake_data=data)
    ControlStore.open(settings.control_db).close()
    with pytest.raises(BackupError, match="embedded lake only"):
        backup(settings, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
