"""What only the Redis profile store has: other nodes racing it, Redis going away, and a
key layout Redis Cluster can run (the shared behaviour is test_profile_store.py's)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
from redis.crc import key_slot

from tdedge import backends
from tdedge.config import Settings
from tdedge.realtime.errors import ProfileStoreDown
from tdedge.realtime.redis import RedisProfileStore
from tdedge.realtime.store import ProfileTx, Resolution
from tests import redis_server as redis_support
from tests.unit.contracts.test_profile_store import COUNTER, SERVICE, T0, count, one, touch

N_PER_PROCESS = 300


@pytest.fixture
def url(redis_server: redis_support.Redis) -> str:
    return redis_server.new_database()


@pytest.fixture
def nodes(url: str) -> Iterator[Callable[[], RedisProfileStore]]:
    """Each call: one more node's store on the same Redis database."""
    opened: list[RedisProfileStore] = []

    def make() -> RedisProfileStore:
        store = RedisProfileStore(url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _merging_after(barrier: threading.Barrier, once: list[bool]) -> Callable[[ProfileTx], Any]:
    """A work that stitches a=1 and b=2, then waits (first try only) until the other
    node has read the same state: both then commit a merge of the same two profiles."""

    def work(tx: ProfileTx) -> Resolution:
        found = tx.resolve(SERVICE, ["a=1", "b=2"], T0 + 10)
        COUNTER.update(found.profile, {}, T0 + 10)
        tx.save(SERVICE, found.profile)
        if once:
            once.pop()
            barrier.wait(timeout=10)
        return found

    return work


def test_a_merge_raced_by_two_nodes_is_done_once(
    nodes: Callable[[], RedisProfileStore],
) -> None:
    first, second = nodes(), nodes()
    older = one(first, ["a=1"]).profile.id
    newer = one(first, ["b=2"]).profile.id
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def node(name: str, store: RedisProfileStore) -> None:
        (results[name],) = store.run([_merging_after(barrier, [True])])

    threads = [
        threading.Thread(target=node, args=(name, store))
        for name, store in (("first", first), ("second", second))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    done = [results["first"], results["second"]]
    assert all(isinstance(r, Resolution) and r.profile.id == older for r in done)
    # One node merged; the other lost the race, ran again and found one profile.
    assert sorted(r.merged for r in done) == [[], [newer]]
    (log,) = first.merges(SERVICE)
    assert (log.survivor, log.merged) == (older, newer)
    (profile,) = second.find(SERVICE, ["a=1", "b=2"])
    assert count(profile) == 4  # a=1 and b=2 once each, and both merging events


def test_try_run_gives_way_when_another_node_wrote_the_same_person(
    nodes: Callable[[], RedisProfileStore],
) -> None:
    mine, other = nodes(), nodes()
    one(mine, ["a=1"])
    raced = threading.Event()

    def work(tx: ProfileTx) -> Resolution:
        found = tx.resolve(SERVICE, ["a=1"], T0)
        COUNTER.update(found.profile, {}, T0)
        tx.save(SERVICE, found.profile)
        if not raced.is_set():
            raced.set()
            one(other, ["a=1"])  # another node commits after this one has read
        return found

    assert mine.try_run([work]) is None
    assert count(other.find(SERVICE, ["a=1"])[0]) == 2  # nothing of the lost try
    (again,) = mine.run([work])
    assert isinstance(again, Resolution) and count(again.profile) == 3


def _hammer(url: str, keys: list[str], n: int, group: int, go: Any) -> None:
    store = RedisProfileStore(url, timeout_s=30)
    go.wait()
    try:
        for _ in range(n // group):
            results = store.run([touch(keys) for _ in range(group)])
            assert not any(isinstance(r, Exception) for r in results)
    finally:
        store.close()


def test_nodes_counting_the_same_person_all_count(url: str) -> None:
    """Four processes, each a node with its own store, count one person stitched
    through two keys at once: no increment is lost, and one profile is left."""
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    plans = [(["k=a"], 1), (["k=a", "m=b"], 2), (["m=b"], 1), (["k=a"], 4)]
    procs = [
        ctx.Process(target=_hammer, args=(url, keys, N_PER_PROCESS, g, go)) for keys, g in plans
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process import and connect, then start them together
    go.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = RedisProfileStore(url)
    try:
        found = store.find(SERVICE, ["k=a", "m=b"])
        assert sum(count(p) for p in found) == 4 * N_PER_PROCESS
        assert len(found) == 1
    finally:
        store.close()


def test_redis_gone_is_profile_store_down(tmp_path: Path) -> None:
    with redis_support.server() as server:
        store = backends.profiles(Settings(data_dir=str(tmp_path), profiles=server.url(1)))
        store.set_timeout(0.5)
        one(store, ["k=1"])
    # The server is stopped: its pooled connection is dead and no new one can be made.
    try:
        with pytest.raises(ProfileStoreDown):
            store.run([touch(["k=1"])])
        with pytest.raises(ProfileStoreDown):
            store.try_run([touch(["k=1"])])
        with pytest.raises(ProfileStoreDown):
            store.find(SERVICE, ["k=1"])
        with pytest.raises(ProfileStoreDown):
            store.merges(SERVICE)
    finally:
        store.close()


def test_a_profile_url_that_is_not_redis_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileStoreDown, match="not a redis"):
        backends.profiles(Settings(data_dir=str(tmp_path), profiles="http://127.0.0.1:1/"))


def test_a_services_keys_share_one_hash_slot(
    nodes: Callable[[], RedisProfileStore], url: str
) -> None:
    """Redis Cluster runs a transaction only over keys of one hash slot."""
    store = nodes()

    def stitch(service: str, keys: list[str]) -> Callable[[ProfileTx], Resolution]:
        return lambda tx: tx.resolve(service, keys, T0)

    for service in ("web", "app"):
        for keys in (["a=1"], ["b=2"], ["a=1", "b=2"]):
            store.run([stitch(service, keys)])
    with redis_client.Redis.from_url(url) as client:
        names = [k.decode() for k in client.keys("*") if k != b"tdedge:p13n:ids"]
    slots = {
        service: {key_slot(n.encode()) for n in names if f"{{{service}}}" in n}
        for service in ("web", "app")
    }
    assert all(len(s) == 1 for s in slots.values()), slots
    # profiles, identity keys, the merge log (all and by survivor) and its sequence
    assert len([n for n in names if "{web}" in n]) == 6


def test_a_group_that_keeps_losing_races_gives_up_after_the_timeout(
    nodes: Callable[[], RedisProfileStore],
) -> None:
    """Redis's counterpart of a write lock held too long: ProfileStoreDown (500 1002)
    once the store timeout has passed, and nothing of the group written."""
    mine, other = nodes(), nodes()
    one(mine, ["a=1"])
    mine.set_timeout(0.3)

    def work(tx: ProfileTx) -> Resolution:
        found = tx.resolve(SERVICE, ["a=1"], T0)
        COUNTER.update(found.profile, {}, T0)
        tx.save(SERVICE, found.profile)
        one(other, ["a=1"])  # every try, another node writes the person first
        return found

    started = time.monotonic()
    with pytest.raises(ProfileStoreDown, match="busy"):
        mine.run([work])
    assert time.monotonic() - started < 30  # gave up, did not spin for ever
    tries = count(other.find(SERVICE, ["a=1"])[0]) - 1
    assert tries >= 1
    (again,) = mine.run([touch(["a=1"])])
    assert isinstance(again, Resolution) and count(again.profile) == tries + 2


def test_a_redis_process_crash_loses_no_acknowledged_update() -> None:
    """With the append-only file (the recommended everysec), Redis writes each change
    before it answers: kill -9 of Redis loses nothing the store acknowledged."""
    with redis_support.server() as server:
        store = RedisProfileStore(server.url(0))
        try:
            for i in range(200):
                one(store, ["k=1", f"m={i % 7}"])
            server.crash_and_restart()
            (found,) = store.find(SERVICE, ["k=1"])  # a new connection, after one retry
            assert count(found) == 200
            assert sorted(found.keys) == ["k=1", *(f"m={i}" for i in range(7))]
        finally:
            store.close()
