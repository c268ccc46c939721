"""Two lake writers commit batches of one journal shard read from the same stored
position, as a loader that stalled past its partition's lease and the loader that took
the partition over do: exactly one lands, the other is refused (PartitionTakenOver),
and the rows are in the lake once (lake/fence.py).

Two nodes on a shared SQLite catalog and on a PostgreSQL one, one commit after the
other; on the PostgreSQL catalog also two commits that overlap in time (each node
with its own write lock): there only the catalog can refuse one. (The embedded lake
has one loader, its data dir's, and no fence: lake/fence.py.) Last,
two loaders on a JetStream journal: the partition's lease lapses while the first holds
a batch it read, the second takes the partition over and loads it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from tdedge import backends
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.errors import PartitionTakenOver
from tdedge.journal.base import JournalReader
from tdedge.journal.envelope import Envelope
from tdedge.lake import system
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.connection import open_connection
from tdedge.lake.inlining import Budget
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader
from tests import nats_server, postgres
from tests.unit.loader.test_loader import World, make_world, sample
from tests.unit.loader.test_loader_fence import StallingLake

SHARD = "TDEDGE_JOURNAL.p01"
TAKEN_OVER = "tdedge_loader_partitions_taken_over_total"
# Steps are taken this long after the records came: their batch is due at once.
LATER_S = 60.0
# Both nodes read one replicated journal: its partitions are named alike on every node.
JOURNAL = "nats://127.0.0.1:4222"


@pytest.fixture(params=["sqlite", "postgresql"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> list[Settings]:
    """Two nodes' settings on one lake, its catalog a SQLite file or a PostgreSQL
    database."""
    if request.param == "sqlite":
        catalog = _shared_sqlite(tmp_path)
    else:
        pg: postgres.Postgres = request.getfixturevalue("postgres_server")
        catalog = pg.new_database()
    return two_nodes(tmp_path, catalog)


def two_nodes(tmp_path: Path, catalog: str) -> list[Settings]:
    """Two nodes' settings: their own data dirs, one shared lake."""
    return [
        Settings(
            data_dir=str(tmp_path / name),
            lake_catalog=catalog,
            lake_data=str(tmp_path / "data"),
            journal=JOURNAL,
        )
        for name in ("a", "b")
    ]


def _batch(start: int, end: int, read_from: int) -> Batch:
    rows = pa.table({"seq": list(range(start, end + 1))})
    return Batch(
        [TableRows("db", "events", rows)],
        positions={SHARD: end},
        read_from={SHARD: read_from},
    )


def _seqs(lake: Lake) -> list[int]:
    return sorted(r[0] for r in lake.query("SELECT seq FROM lake.db.events").rows)


def test_a_commit_from_a_moved_position_is_refused(nodes: list[Settings]) -> None:
    with Lake.open(nodes[0]) as first, Lake.open(nodes[1]) as second:
        first.commit(_batch(1, 10, read_from=-1))
        # The stalled loader read 1..10 before the other committed them.
        with pytest.raises(PartitionTakenOver) as refused:
            second.commit(_batch(1, 12, read_from=-1))
        assert refused.value.shards == [SHARD]
        # Read from the position stored now, it commits.
        second.commit(_batch(11, 12, read_from=10))
        with pytest.raises(PartitionTakenOver):
            first.commit(_batch(11, 20, read_from=10))
        assert _seqs(second) == list(range(1, 13))
        assert second.positions() == {SHARD: 12}


class PausingLake(Lake):
    """A lake whose first commit waits, its transaction open and its positions not yet
    written, until the other lake's has come as far: the two overlap."""

    def __init__(self, meet: threading.Barrier, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._meet: threading.Barrier | None = meet

    def _insert(self, ref: str, table: pa.Table, budget: Budget) -> None:
        if ref == system.POSITIONS and self._meet is not None:
            meet, self._meet = self._meet, None
            meet.wait()
        super()._insert(ref, table, budget)


def test_two_overlapping_commits_of_one_shard_land_once(
    tmp_path: Path, postgres_server: postgres.Postgres
) -> None:
    catalog = postgres_server.new_database()
    a, b = two_nodes(tmp_path, catalog)
    assert a.lake_locks != b.lake_locks  # nothing but the catalog stands between them
    with Lake.open(a) as first:
        # The shard's fence exists already: the commits race on its row, not its creation.
        first.commit(_batch(1, 10, read_from=-1))
    meet = threading.Barrier(2, timeout=60)
    lakes = [
        PausingLake(meet, open_connection(s, read_only=False), s, read_only=False) for s in (a, b)
    ]
    try:

        def commit(lake: Lake) -> str:
            try:
                lake.commit(_batch(11, 20, read_from=10))
            except PartitionTakenOver:
                return "refused"
            return "landed"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(commit, lakes))
        assert outcomes == ["landed", "refused"]
        assert _seqs(lakes[0]) == list(range(1, 21))
        assert lakes[1].positions() == {SHARD: 20}
    finally:
        for lake in lakes:
            lake.close()


def test_a_loader_that_lost_its_lease_with_a_batch_read_loads_nothing_twice(
    tmp_path: Path, nats_cluster: nats_server.Cluster
) -> None:
    world = make_world(
        tmp_path,
        lake_catalog=_shared_sqlite(tmp_path),
        journal=nats_cluster.url,
        journal_stream=nats_cluster.new_stream(),
        journal_partitions=1,
        journal_lease_ttl_s=2.0,
        journal_publish_timeout_s=15.0,
    )
    s = world.settings
    journal = backends.journal(s)
    first = backends.journal_reader(s)
    stalled = StallingLake.open(s)
    second: JournalReader | None = None
    taken: list[Lake] = []  # the other loader's lake, opened once the table exists
    try:
        stalling = Loader(s, first, Directory(world.store, ttl_s=60), stalled)
        # The table exists before: both loaders append to it.
        asyncio.run(journal.append(_envelope(world, 0)))
        assert stalling.step(time.time() + LATER_S).rows == 1
        for i in range(1, 4):
            asyncio.run(journal.append(_envelope(world, i)))

        def take_over() -> None:
            nonlocal second
            # The first loader stalls: its leases are not renewed and lapse.
            renewer = first._renewer  # type: ignore[attr-defined]
            first._io.loop.call_soon_threadsafe(renewer.cancel)  # type: ignore[attr-defined]
            second = backends.journal_reader(s)
            taken.append(Lake.open(s))
            other = Loader(s, second, Directory(world.store, ttl_s=60), taken[0])
            loaded = 0
            deadline = time.monotonic() + 30
            while loaded < 3:
                assert time.monotonic() < deadline, "the partition was not taken over"
                loaded += other.step(time.time() + LATER_S).rows
                time.sleep(0.2)

        stalled.meanwhile = take_over
        before = sample(TAKEN_OVER)
        assert stalling.step(time.time() + LATER_S).rows == 0
        assert sample(TAKEN_OVER) == before + 1
        assert world.rows("SELECT count(*), count(DISTINCT i) FROM db.t") == [(4, 4)]
    finally:
        for opened in (second, first, journal):
            if opened is not None:
                opened.close()
        stalled.close()
        for lake in taken:
            lake.close()
        world.lake.close()
        world.store.close()


def _shared_sqlite(root: Path) -> str:
    """A SQLite catalog the nodes share (as on a shared disk)."""
    return f"sqlite:///{root / 'shared' / 'catalog.sqlite'}"


def _envelope(world: World, i: int) -> Envelope:
    record = msgspec.json.encode({"i": i})
    return Envelope(int(time.time() * 1000), "legacy", "db", "t", hash_key(world.master), record)
