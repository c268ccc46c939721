"""The door of each loaded row: ``tdedge_system.arrivals``, written with the rows, and
the feed that joins it to them (lake/feed.py), against a real DuckLake in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tdedge.config import Settings
from tdedge.lake import system
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.connection import open_connection
from tdedge.lake.feed import door_counts, read_changes
from tdedge.lake.lake import Lake


def everything(database: str, table: str) -> bool:
    return True


def doors_seen(s: Settings, limit: int = 50) -> list[tuple[int, str | None]]:
    con = open_connection(s, read_only=True)
    try:
        changes = read_changes(con, 0, everything, account_id=None, limit=limit)
    finally:
        con.close()
    return [(e.record["n"], e.door) for e in changes.events]


def counts(s: Settings) -> dict[tuple[str, str], dict[str, int]]:
    con = open_connection(s, read_only=True)
    try:
        return door_counts(con)
    finally:
        con.close()


def numbered(start: int, n: int) -> pa.Table:
    return pa.table({"time": [1_750_000_000] * n, "n": list(range(start, start + n))})


# Both ways the lake stores a commit's rows: inlined in the catalog, and Parquet files.
@pytest.mark.parametrize("inline_rows", [10_000, 0])
def test_the_feed_gives_each_row_the_door_it_came_in_by(tmp_path: Path, inline_rows: int) -> None:
    s = Settings(data_dir=str(tmp_path / "data"), lake_inlining_row_limit=inline_rows)
    with Lake.open(s) as lake:
        mixed = (("legacy", 2), ("pixel", 1), ("legacy", 2))
        lake.commit(Batch([TableRows("db", "t", numbered(0, 5), doors=mixed)], positions={"a": 1}))
        both = [
            TableRows("db", "t", numbered(5, 3), doors=(("ingest", 3),)),
            TableRows("db", "u", numbered(100, 1), doors=(("query", 1),)),
        ]
        lake.commit(Batch(both, positions={"a": 2}))
        # Rows a writer gave no doors (as before doors were recorded) have none.
        lake.commit(Batch([TableRows("db", "t", numbered(8, 1))], positions={"a": 3}))
    assert doors_seen(s) == [
        (0, "legacy"), (1, "legacy"), (2, "pixel"), (3, "legacy"), (4, "legacy"),
        (5, "ingest"), (6, "ingest"), (7, "ingest"), (100, "query"), (8, None),
    ]  # fmt: skip
    # A read that keeps only the newest rows of a table counts their places from the
    # commit's last row.
    assert [d for d in doors_seen(s, limit=3) if d[0] < 100] == [
        (6, "ingest"), (7, "ingest"), (8, None),
    ]  # fmt: skip
    assert [d for d in doors_seen(s, limit=6) if d[0] < 100][:3] == [
        (3, "legacy"), (4, "legacy"), (5, "ingest"),
    ]  # fmt: skip
    assert counts(s) == {
        ("db", "t"): {"legacy": 4, "pixel": 1, "ingest": 3},
        ("db", "u"): {"query": 1},
    }


def test_compaction_rolls_old_arrivals_up_and_keeps_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system, "ROLL_UP_ARRIVALS_AFTER", 1)
    s = Settings(data_dir=str(tmp_path / "data"))
    with Lake.open(s) as lake:
        for i in range(4):
            doors: Any = (("legacy", 1), ("pixel", 1))
            lake.commit(Batch([TableRows("db", "t", numbered(2 * i, 2), doors=doors)]))
        before = counts(s)
        assert before == {("db", "t"): {"legacy": 4, "pixel": 4}}
        assert lake.query(f"SELECT count(*) FROM {system.ARRIVALS}").rows == [(8,)]
        later = time.time() + s.lake_retention_s + 60
        lake.compact(later)
        assert counts(s) == before
        assert lake.query(f"SELECT count(*) FROM {system.ARRIVALS}").rows == [(2,)]
        # Newer rows join the rolled-up ones; a later pass rolls them up once.
        lake.commit(Batch([TableRows("db", "t", numbered(8, 1), doors=(("pixel", 1),))]))
        lake.compact(later + 1)
        lake.compact(later + s.lake_retention_s + 120)
        assert counts(s) == {("db", "t"): {"legacy": 4, "pixel": 5}}
        assert lake.query(f"SELECT count(*) FROM {system.ARRIVALS}").rows == [(2,)]


def test_a_lake_made_before_arrivals_gets_the_table(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path / "data"))
    with Lake.open(s) as lake:
        lake.commit(Batch([TableRows("db", "t", numbered(0, 2))], positions={"a": 1}))
    con = open_connection(s, read_only=False)
    try:
        con.execute(f"DROP TABLE {system.ARRIVALS}")
    finally:
        con.close()
    # A reader opened first sets the lake up, as a writer would.
    assert doors_seen(s) == [(0, None), (1, None)]
    with Lake.open(s) as lake:
        lake.commit(Batch([TableRows("db", "t", numbered(2, 1), doors=(("legacy", 1),))]))
    assert doors_seen(s)[-1] == (2, "legacy")
    assert counts(s) == {("db", "t"): {"legacy": 1}}
