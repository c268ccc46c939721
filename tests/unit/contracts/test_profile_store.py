"""Profile store contract: stitching, merges, isolation, atomicity across processes.

One parametrized fixture runs the same tests on every ProfileStore implementation that
``tdedge.backends`` hands out (SQLite, and Redis on a real server started for the
session). The tests that take ``tmp_path`` instead are the embedded SQLite store's own;
test_profile_store_redis.py has the Redis store's own.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tdedge import backends
from tdedge.config import Settings
from tdedge.realtime.attributes import CounterAttribute
from tdedge.realtime.errors import ProfileStoreDown
from tdedge.realtime.profile import MAX_KEYS, Profile
from tdedge.realtime.sqlite import SQLiteProfileStore, default_path
from tdedge.realtime.store import ProfileStore, ProfileTx, Resolution
from tests import redis_server as redis_support

T0 = 1_800_000_000_000
SERVICE = "web"
COUNTER = CounterAttribute("n")
N_PER_PROCESS = 800

Factory = Callable[[], ProfileStore]


def _sqlite(path: Path) -> Factory:
    return lambda: backends.profiles(Settings(data_dir=str(path)))


def _redis(path: Path, url: str) -> Factory:
    return lambda: backends.profiles(Settings(data_dir=str(path), profiles=url))


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[ProfileStore] = []
    if request.param == "redis":
        server: redis_support.Redis = request.getfixturevalue("redis_server")
        factory = _redis(tmp_path, server.new_database())
    else:
        factory = _sqlite(tmp_path)

    def make() -> ProfileStore:
        store = factory()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def touch(keys: list[str], now: int = T0) -> Callable[[ProfileTx], Resolution]:
    """A work: stitch ``keys`` and count one event, as the engine does."""

    def work(tx: ProfileTx) -> Resolution:
        found = tx.resolve(SERVICE, keys, now)
        COUNTER.update(found.profile, {}, now)
        tx.save(SERVICE, found.profile)
        return found

    return work


def one(store: ProfileStore, keys: list[str], now: int = T0) -> Resolution:
    (result,) = store.run([touch(keys, now)])
    assert isinstance(result, Resolution)
    return result


def count(profile: Profile) -> int:
    return int(COUNTER.value(profile, {}, T0))


def test_new_keys_start_a_profile_and_known_keys_find_it(make_store: Factory) -> None:
    store = make_store()
    first = one(store, ["td_client_id=a"])
    assert first.created and first.merged == []
    again = one(store, ["td_client_id=a"])
    assert not again.created and again.profile.id == first.profile.id
    assert count(again.profile) == 2
    assert one(store, ["td_client_id=b"]).profile.id != first.profile.id


def test_a_new_key_joins_the_profile_its_sibling_points_at(make_store: Factory) -> None:
    store = make_store()
    first = one(store, ["td_client_id=a"])
    joined = one(store, ["td_client_id=a", "email=e"])
    assert joined.profile.id == first.profile.id and not joined.created
    assert joined.profile.keys == ["td_client_id=a", "email=e"]
    assert one(store, ["email=e"]).profile.id == first.profile.id


def test_keys_of_two_profiles_merge_them_into_the_older(make_store: Factory) -> None:
    store = make_store()
    older = one(store, ["td_client_id=a"], T0)
    one(store, ["td_client_id=a"], T0)
    newer = one(store, ["email=e"], T0 + 5)
    merged = one(store, ["email=e", "td_client_id=a"], T0 + 10)
    assert merged.profile.id == older.profile.id
    assert merged.merged == [newer.profile.id]
    assert count(merged.profile) == 4  # 2 + 1 + this event
    assert sorted(merged.profile.keys) == ["email=e", "td_client_id=a"]
    assert [p.id for p in store.find(SERVICE, ["email=e"])] == [older.profile.id]
    (log,) = store.merges(SERVICE)
    assert (log.survivor, log.merged, log.keys, log.time_ms) == (
        older.profile.id,
        newer.profile.id,
        ["email=e"],
        T0 + 10,
    )
    assert store.merges(SERVICE, newer.profile.id) == []


def test_three_way_merge_keeps_the_oldest(make_store: Factory) -> None:
    store = make_store()
    ids = [one(store, [k]).profile.id for k in ("a=1", "b=2", "c=3")]
    merged = one(store, ["c=3", "b=2", "a=1"])
    assert merged.profile.id == ids[0]
    assert sorted(merged.merged) == ids[1:]
    assert count(merged.profile) == 4
    assert len(store.merges(SERVICE)) == 2


def test_services_do_not_share_profiles(make_store: Factory) -> None:
    store = make_store()
    (a,) = store.run([lambda tx: tx.resolve("one", ["k=1"], T0)])
    (b,) = store.run([lambda tx: tx.resolve("two", ["k=1"], T0)])
    assert isinstance(a, Resolution) and isinstance(b, Resolution)
    assert a.created and b.created and a.profile.id != b.profile.id


def test_a_profile_holds_at_most_max_keys(make_store: Factory) -> None:
    store = make_store()
    keys = [f"k=v{i}" for i in range(MAX_KEYS + 5)]
    found = one(store, keys)
    assert len(found.profile.keys) == MAX_KEYS
    # A key that did not fit points nowhere, so it starts a profile of its own.
    assert one(store, [keys[-1]]).created


def test_a_failing_work_is_undone_alone(make_store: Factory) -> None:
    store = make_store()

    def boom(tx: ProfileTx) -> Resolution:
        tx.resolve(SERVICE, ["k=boom"], T0)  # writes, then fails
        raise ValueError("bug")

    results = store.run([touch(["k=1"]), boom, touch(["k=2"])])
    assert isinstance(results[1], ValueError)
    assert isinstance(results[0], Resolution) and isinstance(results[2], Resolution)
    assert store.find(SERVICE, ["k=boom"]) == []
    assert count(store.find(SERVICE, ["k=1"])[0]) == 1
    assert count(store.find(SERVICE, ["k=2"])[0]) == 1


def test_a_group_sees_its_own_writes(make_store: Factory) -> None:
    store = make_store()
    results = store.run([touch(["k=1"]), touch(["k=1"]), touch(["k=1", "m=2"])])
    assert [r.created for r in results if isinstance(r, Resolution)] == [True, False, False]
    assert count(store.find(SERVICE, ["m=2"])[0]) == 3


def test_store_down_when_its_lock_is_held_too_long(make_store: Factory, tmp_path: Path) -> None:
    store = make_store()
    one(store, ["k=1"])
    store.set_timeout(0.2)
    if not isinstance(store, SQLiteProfileStore):
        pytest.skip("holding the lock is SQLite-specific")
    other = sqlite3.connect(default_path(tmp_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ProfileStoreDown):
            store.run([touch(["k=1"])])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert count(one(store, ["k=1"]).profile) == 2


def _hammer(path: str, keys: list[str], n: int, group: int, go: Any) -> None:
    store = SQLiteProfileStore(Path(path))
    go.wait()
    try:
        for _ in range(n // group):
            results = store.run([touch(keys) for _ in range(group)])
            assert not any(isinstance(r, Exception) for r in results)
    finally:
        store.close()


def test_no_lost_increments_across_processes(tmp_path: Path) -> None:
    """Four processes count events for one person (stitched through two keys) at once."""
    path = tmp_path / "profiles.sqlite"
    SQLiteProfileStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    plans = [(["k=a"], 1), (["k=a", "m=b"], 2), (["m=b"], 1), (["k=a"], 4)]
    procs = [
        ctx.Process(target=_hammer, args=(str(path), keys, N_PER_PROCESS, g, go))
        for keys, g in plans
    ]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process open the store, then start them together
    go.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = SQLiteProfileStore(path)
    try:
        found = store.find(SERVICE, ["k=a", "m=b"])
        total = sum(count(p) for p in found)
        assert total == 4 * N_PER_PROCESS
        # Whichever process saw both keys first merged them; afterwards one profile.
        assert len(found) == 1
    finally:
        store.close()


def test_creation_and_merge_inside_one_group(make_store: Factory) -> None:
    """Two people first seen in one group, then found to be one: the older id survives,
    nothing of the younger is left behind, and the log has the merge."""
    store = make_store()
    groups = [["a=1"], ["e=2"], ["a=1", "e=2"], ["e=2"]]
    results = store.run([touch(k) for k in groups], [(SERVICE, k) for k in groups])
    first, second, merged, after = (r for r in results if isinstance(r, Resolution))
    assert first.created and second.created and first.profile.id < second.profile.id
    assert merged.profile.id == first.profile.id and merged.merged == [second.profile.id]
    assert after.profile.id == first.profile.id and count(after.profile) == 4
    assert [p.id for p in store.find(SERVICE, ["a=1", "e=2"])] == [first.profile.id]
    (log,) = store.merges(SERVICE)
    assert (log.survivor, log.merged, log.keys) == (first.profile.id, second.profile.id, ["e=2"])


def test_chained_merges_in_one_group_end_in_the_oldest(make_store: Factory) -> None:
    store = make_store()
    ids = [one(store, [k]).profile.id for k in ("a=1", "b=2", "c=3")]
    groups = [["b=2", "c=3"], ["a=1", "c=3"], ["c=3"]]
    results = store.run([touch(k) for k in groups], [(SERVICE, k) for k in groups])
    last = results[-1]
    assert isinstance(last, Resolution) and last.profile.id == ids[0]
    assert count(last.profile) == 6
    assert [p.id for p in store.find(SERVICE, ["a=1", "b=2", "c=3"])] == [ids[0]]
    assert sorted(m.merged for m in store.merges(SERVICE)) == ids[1:]


def test_ids_only_grow(make_store: Factory) -> None:
    store = make_store()
    a = one(store, ["a=1"]).profile.id
    b = one(store, ["b=1"]).profile.id
    one(store, ["a=1", "b=1"])  # b is merged away: its id is never handed out again
    c = one(store, ["c=1"]).profile.id
    assert a < b < c


def test_two_connections_alternating_see_each_others_updates(tmp_path: Path) -> None:
    """Each store keeps the profiles it committed decoded; the other's commits must
    still be seen (the cache is dropped when another connection has written)."""
    a = SQLiteProfileStore(tmp_path / "profiles.sqlite")
    b = SQLiteProfileStore(tmp_path / "profiles.sqlite")
    try:
        for i in range(6):
            found = one(a if i % 2 else b, ["k=1"])
            assert count(found.profile) == i + 1
        assert one(a, ["k=1", "m=2"]).profile.keys == ["k=1", "m=2"]
        assert one(b, ["m=2"]).profile.keys == ["k=1", "m=2"]
    finally:
        a.close()
        b.close()


def test_a_failed_group_leaves_no_trace_in_the_next(make_store: Factory) -> None:
    """A work that fails after changing a profile in memory: the next group reads the
    committed state, not the abandoned one."""
    store = make_store()
    one(store, ["k=1"])

    def half(tx: ProfileTx) -> Resolution:
        found = tx.resolve(SERVICE, ["k=1"], T0)
        COUNTER.update(found.profile, {}, T0)
        raise ValueError("bug")

    (result,) = store.run([half])
    assert isinstance(result, ValueError)
    assert count(one(store, ["k=1"]).profile) == 2


def test_a_long_wal_is_checkpointed_under_the_writers_lock_and_starts_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "profiles.sqlite"
    store = SQLiteProfileStore(path)
    for i in range(20):
        one(store, [f"k={i}"])
    store.set_timeout(0.05)
    writer = path.with_suffix(".lock").open("ab")  # another writer holding the lock
    fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
    try:
        store.checkpoint(start_over_frames=10**9)  # a short WAL: no lock needed
        with pytest.raises(ProfileStoreDown):
            store.checkpoint(start_over_frames=1)
    finally:
        writer.close()
    store.checkpoint(start_over_frames=1)
    one(store, ["k=last"])
    other = sqlite3.connect(path, isolation_level=None)
    try:
        (_, frames, _) = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        other.close()
    # Only the last commit's pages: the WAL started over after the checkpoint.
    assert 0 < frames < 10
    assert count(one(store, ["k=last"]).profile) == 2
    store.close()
