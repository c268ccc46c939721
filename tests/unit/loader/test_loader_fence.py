"""A loader that stalls with a batch it read while another loader takes one of its
partitions over and loads it: its commit is refused, it drops the batch, counts it,
and loads on from the positions in the lake. Every record once (lake/fence.py).

The lake is one other nodes may share (a SQLite catalog of its own): the embedded lake
has one loader and no fence."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tdedge.control.directory import Directory
from tdedge.journal.envelope import JournalGroup
from tdedge.lake.batch import Batch
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader
from tests.unit.loader.test_loader import LATER, MemoryReader, World, make_world, sample

TAKEN_OVER = "tdedge_loader_partitions_taken_over_total"


class StallingLake(Lake):
    """A lake whose first commit waits while ``meanwhile`` runs: the loader's stall."""

    meanwhile: Callable[[], None] | None = None

    def commit(self, batch: Batch) -> None:
        if self.meanwhile is not None:
            stall, self.meanwhile = self.meanwhile, None
            stall()
        super().commit(batch)


class OneShard:
    """The journal as a loader that holds one partition's lease reads it."""

    def __init__(self, reader: MemoryReader, shard: str) -> None:
        self._reader = reader
        self._shard = shard

    def read(
        self, after: Mapping[str, int], limit: int, max_bytes: int | None = None
    ) -> list[JournalGroup]:
        groups = self._reader.read(after, limit, max_bytes)
        return [g for g in groups if g.shard == self._shard]

    def release(self, upto: Mapping[str, int]) -> None:
        self._reader.release({self._shard: upto[self._shard]} if self._shard in upto else {})

    def pending(self, after: Mapping[str, int]) -> tuple[int, int | None]:
        return self._reader.pending(after)

    def close(self) -> None:
        pass


def _world(tmp_path: Path, **overrides: Any) -> World:
    catalog = f"sqlite:///{tmp_path / 'shared' / 'catalog.sqlite'}"
    return make_world(tmp_path, lake_catalog=catalog, **overrides)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = _world(tmp_path)
    yield w
    w.lake.close()
    w.store.close()


def test_a_loader_whose_partition_was_taken_over_drops_its_batch(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The table exists before: both loaders append to it.
    world.send({"i": 100}, shard="b")
    assert world.loader().step(LATER).rows == 1
    for i in range(3):
        world.send({"i": i}, shard="a")
        world.send({"i": 10 + i}, shard="b")
    stalled = StallingLake.open(world.settings)
    loader = world.loader(stalled)
    # The other loader took partition a over and loads it while this one stalls.
    directory = Directory(world.store, ttl_s=60)
    other = Loader(world.settings, OneShard(world.reader, "a"), directory, world.lake)

    def take_over() -> None:
        assert other.step(LATER).rows == 3

    stalled.meanwhile = take_over
    before = sample(TAKEN_OVER)
    with caplog.at_level(logging.WARNING, logger="tdedge.loader"):
        report = loader.step(LATER)
    assert (report.entries, report.rows) == (0, 0)
    assert sample(TAKEN_OVER) == before + 1
    warned = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert warned == ["partition taken over by another loader: a; its batch is dropped"]
    assert world.lake.positions() == {"a": 3, "b": 1}

    # It goes on with partition b, from the positions the lake has.
    world.send({"i": 3}, shard="a")
    assert loader.step(LATER).rows == 4
    assert world.lake.positions() == {"a": 4, "b": 4}
    assert world.rows("SELECT count(*), count(DISTINCT i) FROM db.t") == [(8, 8)]
    stalled.close()


def test_a_loader_committing_tables_apart_is_fenced_too(tmp_path: Path) -> None:
    """A loader creating new tables a few per commit commits them with load marks,
    the positions unmoved: those commits are refused as well once another loader
    has moved the positions."""
    world = _world(tmp_path, loader_new_tables_per_commit=1)
    for i in range(3):
        world.send({"i": i}, table=f"t{i}", shard="a")
    stalled = StallingLake.open(world.settings)
    loader = world.loader(stalled)
    other = world.loader()

    def take_over() -> None:
        while other.step(LATER).rows:
            pass

    stalled.meanwhile = take_over
    assert loader.step(LATER).rows == 0
    for i in range(3):
        assert world.rows(f"SELECT count(*) FROM db.t{i}") == [(1,)]
    assert loader.step(LATER).rows == 0
    stalled.close()
    world.lake.close()
    world.store.close()
