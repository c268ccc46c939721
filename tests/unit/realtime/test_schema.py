"""A store creates its tables on its first open only; later a missing table is an outage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tdedge.realtime.batch import SQLiteBatchStore
from tdedge.realtime.errors import BatchStoreDown, ProfileStoreDown
from tdedge.realtime.sqlite import SQLiteProfileStore


def drop(path: Path, table: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    conn.close()


def test_a_batch_store_reopened_after_its_table_went_missing_is_down(tmp_path: Path) -> None:
    path = tmp_path / "batch.sqlite"
    store = SQLiteBatchStore(path)
    store.replace("web", "segment", "s1", "SELECT 1", [("k=1", None)], 1)
    assert store.facts("web", ["k=1"]).segments == {"s1"}
    store.close()

    drop(path, "facts")
    reopened = SQLiteBatchStore(path)
    with pytest.raises(BatchStoreDown):
        reopened.facts("web", ["k=1"])
    reopened.close()
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    assert "facts" not in {name for (name,) in tables}


def test_a_profile_store_reopened_after_its_table_went_missing_is_down(tmp_path: Path) -> None:
    path = tmp_path / "profiles.sqlite"
    SQLiteProfileStore(path).close()
    drop(path, "profile_keys")
    reopened = SQLiteProfileStore(path)
    with pytest.raises(ProfileStoreDown):
        reopened.find("web", ["k=1"])
    reopened.close()


def test_a_store_written_before_versions_were_recorded_opens_with_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batch.sqlite"
    store = SQLiteBatchStore(path)
    store.replace("web", "segment", "s1", "SELECT 1", [("k=1", None)], 1)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA user_version=0")
    conn.close()
    again = SQLiteBatchStore(path)
    assert again.facts("web", ["k=1"]).segments == {"s1"}
    again.close()
