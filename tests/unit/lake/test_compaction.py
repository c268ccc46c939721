"""Compaction works on the tables that changed, a slice at a time, and loading goes on
between its slices."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tdedge.lake.batch import Batch
from tdedge.lake.compaction import Slice
from tdedge.lake.lake import Lake
from tests.unit.loader.test_loader import LATER, World, make_world


def tables_of(slices: list[Slice], step: str) -> list[str]:
    """The user tables a pass's ``step`` slices worked on, in order."""
    return [t for s in slices if s.step == step for d, t in s.tables if d == "db"]


def test_a_pass_flushes_and_merges_only_the_tables_that_changed(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    loader = w.loader()
    for i in range(4):
        w.send({"i": i}, table=f"t{i}")
    loader.step(LATER)
    first = list(w.lake.compaction(LATER))
    assert tables_of(first, "flush") == ["t0", "t1", "t2", "t3"]
    assert tables_of(first, "merge") == []  # one file each

    w.send({"i": 10}, table="t1")
    loader.step(LATER)
    second = list(w.lake.compaction(LATER))
    assert tables_of(second, "flush") == ["t1"]
    assert tables_of(second, "merge") == ["t1"]  # its two small files become one
    assert [s.step for s in second][-3:] == ["expire", "cleanup", "orphans"]

    third = list(w.lake.compaction(LATER))
    assert tables_of(third, "flush") == tables_of(third, "merge") == []
    assert w.rows("SELECT i FROM db.t1 ORDER BY i") == [(1,), (10,)]
    w.lake.close()
    w.store.close()


def test_a_slice_ends_once_its_time_is_up(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    for i in range(3):
        w.send({"i": i}, table=f"t{i}")
    w.loader().step(LATER)
    # No time at all: every slice still does one table, then lets the loader load.
    flushes = [s for s in w.lake.compaction(LATER, slice_s=0) if s.step == "flush"]
    assert all(len(s.tables) == 1 for s in flushes)
    assert tables_of(flushes, "flush") == ["t0", "t1", "t2"]
    w.lake.close()
    w.store.close()


class WatchedLake(Lake):
    """The real lake, noting commits and compaction slices in the order they happen, and
    journaling a record for another table while a pass is under way."""

    world: World
    events: list[Any]

    def compaction(
        self,
        now: float,
        slice_s: float = float("inf"),
        expiries: Mapping[tuple[str, str], int] | None = None,
    ) -> Iterator[Slice]:
        for n, done in enumerate(super().compaction(now, slice_s, expiries)):
            self.events.append(done.step)
            if n == 1:
                self.world.send({"fresh": 1}, table="fresh")
            yield done
        self.events.append("pass over")

    def commit(self, batch: Batch) -> None:
        super().commit(batch)
        self.events.extend(f"commit {t.table}" for t in batch.tables)


def test_loading_goes_on_while_a_compaction_pass_runs(tmp_path: Path) -> None:
    w = make_world(tmp_path, compaction_interval_s=0.0, compaction_slice_s=0.0, loader_poll_s=0.01)
    for i in range(10):
        w.send({"i": i}, table=f"t{i}")
    w.loader().step(LATER)
    lake = WatchedLake.open(w.settings)
    lake.world, lake.events = w, []
    stop = threading.Event()
    thread = threading.Thread(target=w.loader(lake, now=LATER).run, args=(stop,))
    thread.start()
    try:
        for _ in range(3000):
            if "pass over" in lake.events:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=60)
    events = lake.events
    assert "pass over" in events and "commit fresh" in events
    # The record came during the pass, and was loaded before the pass was over.
    assert events.index("commit fresh") < events.index("pass over")
    assert events.count("flush") >= 10
    lake.close()
    w.lake.close()
    w.store.close()
