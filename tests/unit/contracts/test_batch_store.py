"""The batch store's contract, on each backend: the data dir's SQLite file (embedded)
and the shared control database (PostgreSQL), where refreshes write and ``tdedge p13n``
reads. Then a node's copy of the shared store (what its edge reads), and the lease
under which one node's refresher at a time computes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tdedge import backends
from tdedge.config import Settings
from tdedge.control import leases, schema
from tdedge.control.leases import Keeper, Lease
from tdedge.control.store import engine_for
from tdedge.realtime import batch, batch_shared
from tdedge.realtime.batch import ATTRIBUTE, CACHE_CHECK_MS, SEGMENT, BatchStore, SQLiteBatchStore
from tdedge.realtime.batch_shared import CHUNK, Replica, SharedBatchStore


@pytest.fixture
def store(settings: Settings) -> Iterator[BatchStore]:
    opened = backends.batch_store(settings)
    yield opened
    opened.close()


def test_the_backend_follows_the_control_database(settings: Settings) -> None:
    opened = backends.batch_store(settings)
    try:
        expected = SharedBatchStore if settings.control else SQLiteBatchStore
        assert isinstance(opened, expected)
    finally:
        opened.close()


def test_segments_and_attributes_of_any_of_a_profiles_keys(store: BatchStore) -> None:
    store.replace("web", SEGMENT, "s1", "q1", [("id=a", None), ("id=b", None)], 10)
    store.replace("web", SEGMENT, "s2", "q2", [("email=x", None)], 10)
    store.replace("web", ATTRIBUTE, "tier", "q3", [("id=a", "gold"), ("id=c", {"n": 1})], 10)
    store.replace("shop", SEGMENT, "s1", "q4", [("id=c", None)], 10)

    found = store.facts("web", ["id=a", "email=x"])
    assert found.segments == {"s1", "s2"} and found.imported == {"tier": "gold"}
    assert store.facts("web", ["id=c"]).imported == {"tier": {"n": 1}}
    assert store.facts("web", ["id=c"]).segments == set()  # shop's s1 is not web's
    assert not store.facts("web", []).segments
    assert store.facts("web", ["id=nobody"]).segments == set()


def test_a_replace_swaps_the_whole_source(store: BatchStore) -> None:
    assert store.replace("web", SEGMENT, "s1", "q", [("id=a", None), ("id=b", None)], 10) == 2
    assert store.replace("web", SEGMENT, "s1", "q", [("id=b", None), ("id=c", None)], 20) == 2
    assert store.facts("web", ["id=a"]).segments == set()
    assert store.facts("web", ["id=c"]).segments == {"s1"}
    (state,) = store.sources()
    assert (state.refreshed_ms, state.rows, state.error) == (20, 2, None)


def test_a_key_given_twice_keeps_its_last_value(store: BatchStore) -> None:
    store.replace("web", ATTRIBUTE, "tier", "q", [("id=a", "silver"), ("id=a", "gold")], 10)
    assert store.facts("web", ["id=a"]).imported == {"tier": "gold"}


def test_a_source_larger_than_one_statement_arrives_whole(store: BatchStore) -> None:
    members = [(f"id={i}", None) for i in range(CHUNK * 2 + 7)]
    assert store.replace("web", SEGMENT, "big", "q", iter(members), 10) == len(members)
    for key in ("id=0", f"id={CHUNK}", f"id={CHUNK * 2 + 6}"):
        assert store.facts("web", [key]).segments == {"big"}


def test_a_failed_refresh_keeps_the_facts_and_says_why(store: BatchStore) -> None:
    store.replace("web", SEGMENT, "s1", "q", [("id=a", None)], 10)
    store.failed("web", SEGMENT, "s1", "q", "table retail.members does not exist", 20)
    store.failed("web", SEGMENT, "never", "q", "boom", 20)
    assert store.facts("web", ["id=a"]).segments == {"s1"}
    states = {s.name: s for s in store.sources()}
    assert (states["s1"].error, states["s1"].refreshed_ms, states["s1"].rows) == (
        "table retail.members does not exist",
        20,
        1,
    )
    assert (states["never"].error, states["never"].rows) == ("boom", 0)
    store.replace("web", SEGMENT, "s1", "q", [("id=b", None)], 30)
    assert {s.name: s.error for s in store.sources()}["s1"] is None


def test_sources_no_longer_configured_are_forgotten(store: BatchStore) -> None:
    store.replace("web", SEGMENT, "s1", "q", [("id=a", None)], 10)
    store.replace("web", SEGMENT, "s2", "q", [("id=a", None)], 10)
    store.forget({("web", SEGMENT, "s2")})
    assert store.facts("web", ["id=a"]).segments == {"s2"}
    assert [s.name for s in store.sources()] == ["s2"]


def test_a_refresh_by_another_process_is_seen_by_the_cached_reads(settings: Settings) -> None:
    reader, writer = backends.batch_store(settings), backends.batch_store(settings)
    try:
        writer.replace("web", SEGMENT, "s1", "q", [("id=a", None)], 10)
        assert reader.cached_facts("web", ["id=a"], 1_000).segments == {"s1"}
        writer.replace("web", SEGMENT, "s1", "q", [("id=b", None)], 20)
        later = 1_000 + CACHE_CHECK_MS
        assert reader.cached_facts("web", ["id=a"], later).segments == set()
    finally:
        reader.close()
        writer.close()


# A node's copy of the shared store: what its edge reads.


@pytest.fixture
def shared(settings: Settings) -> Iterator[SharedBatchStore]:
    """The shared store on each database (PostgreSQL, and the SQLite control file)."""
    opened = SharedBatchStore(engine_for(settings.control_url), node="node-a")
    yield opened
    opened.close()


def test_a_node_copies_what_changed_and_its_edge_reads_it(
    shared: SharedBatchStore, tmp_path: Path
) -> None:
    path = batch.default_path(tmp_path / "node-b")
    local = SQLiteBatchStore(path)
    edge = SQLiteBatchStore(path)  # another process of the node, as the edge is
    replica = Replica(shared, local)
    try:
        shared.replace("web", SEGMENT, "s1", "q1", [("id=a", None)], 10)
        shared.replace("web", ATTRIBUTE, "tier", "q2", [("id=a", "gold")], 10)
        assert replica.sync() == 2
        found = edge.cached_facts("web", ["id=a"], 1_000)
        assert found.segments == {"s1"} and found.imported == {"tier": "gold"}
        assert {s.name: s.rows for s in edge.sources()} == {"s1": 1, "tier": 1}

        # Nothing changed: nothing is written, so the edge keeps its cache.
        before = edge._conn.execute("PRAGMA data_version").fetchone()[0]
        assert replica.sync() == 0
        assert edge._conn.execute("PRAGMA data_version").fetchone()[0] == before

        # A new computation moves; a failure moves its state and keeps the facts.
        shared.replace("web", SEGMENT, "s1", "q1", [("id=b", None)], 20)
        shared.failed("web", ATTRIBUTE, "tier", "q2", "lake down", 20)
        assert replica.sync() == 1
        assert edge.cached_facts("web", ["id=b"], 1_000 + CACHE_CHECK_MS).segments == {"s1"}
        assert edge.facts("web", ["id=a"]).segments == set()
        assert edge.facts("web", ["id=a"]).imported == {"tier": "gold"}
        assert {s.name: s.error for s in edge.sources()}["tier"] == "lake down"

        # A source dropped from the configuration goes from every node.
        shared.forget({("web", SEGMENT, "s1")})
        replica.sync()
        assert [s.name for s in edge.sources()] == ["s1"]
        assert edge.facts("web", ["id=a"]).imported == {}
    finally:
        edge.close()
        replica.close()


def test_a_node_started_later_copies_everything_once(
    shared: SharedBatchStore, tmp_path: Path
) -> None:
    shared.replace("web", SEGMENT, "s1", "q1", [("id=a", None)], 10)
    path = batch.default_path(tmp_path)
    first = Replica(shared, SQLiteBatchStore(path))
    assert first.sync() == 1
    first.close()
    again = Replica(shared, SQLiteBatchStore(path))  # the node restarted
    try:
        assert again.sync() == 1 and again.sync() == 0
        assert SQLiteBatchStore(path).facts("web", ["id=a"]).segments == {"s1"}
    finally:
        again.close()


def test_the_shared_store_names_the_node_that_computed(shared: SharedBatchStore) -> None:
    shared.replace("web", SEGMENT, "s1", "q1", [("id=a", None)], 10)
    assert [s.refreshed_by for s in shared.sources()] == ["node-a"]


# The lease.


def test_one_holder_at_a_time_and_another_once_it_expires(settings: Settings) -> None:
    engine = engine_for(settings.control_url)
    a = Lease(engine, "job", "a", ttl_s=10)
    b = Lease(engine, "job", "b", ttl_s=10)
    try:
        assert a.current() is None
        assert a.hold(now=100) and not b.hold(now=101)
        assert a.hold(now=105)  # renewed: until 115
        assert not b.hold(now=112)
        held = a.current()
        assert held is not None and (held.holder, held.expires_at) == ("a", 115)
        assert b.hold(now=116)  # a stopped renewing
        assert not a.hold(now=117)
        b.release()
        assert a.hold(now=118)  # let go: taken at once
        assert Lease(engine, "other", "b", ttl_s=10).hold(now=118)  # names are separate
    finally:
        engine.dispose()


def test_of_holders_racing_for_an_expired_lease_one_wins(settings: Settings) -> None:
    engine = engine_for(settings.control_url)
    Lease(engine, "job", "old", ttl_s=1).hold(now=0)
    contenders = [Lease(engine, "job", f"n{i}", ttl_s=10) for i in range(6)]
    won: list[str] = []
    start = threading.Barrier(len(contenders))

    def race(lease: Lease) -> None:
        start.wait()
        if lease.hold(now=50):
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(c,)) for c in contenders]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = contenders[0].current()
        assert len(won) == 1 and held is not None and held.holder == won[0]
    finally:
        engine.dispose()


def test_a_keeper_holds_while_it_runs_and_lets_go_when_stopped(settings: Settings) -> None:
    engine = engine_for(settings.control_url)
    stop = threading.Event()
    keeper = Keeper(Lease(engine, "job", "a", ttl_s=30), stop).start()
    other = Lease(engine, "job", "b", ttl_s=30)
    try:
        deadline = time.monotonic() + 30
        while not keeper.held() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert keeper.held() and not other.hold()
        stop.set()
        keeper.join(30)
        assert not keeper.held()
        assert other.hold()  # at once, not 30 s later
    finally:
        stop.set()
        engine.dispose()


def test_the_tables_are_as_their_migration_makes_them(settings: Settings) -> None:
    tables = (*batch_shared.metadata.tables.values(), leases.leases)
    ours = {t.name for t in tables}
    combined = sa.MetaData()
    for table in tables:
        table.to_metadata(combined)

    def include(obj: Any, name: str | None, kind: str, reflected: bool, to: Any) -> bool:
        return kind != "table" or name in ours

    engine = engine_for(settings.control_url)
    try:
        schema.ensure(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": include})
            assert compare_metadata(context, combined) == []
    finally:
        engine.dispose()
