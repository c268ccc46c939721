"""ProfileCache: what a store connection keeps decoded between groups."""

from __future__ import annotations

from tdedge.realtime.cache import ProfileCache
from tdedge.realtime.profile import Profile


def profile(pid: int, *keys: str) -> Profile:
    return Profile(id=pid, created_ms=0, keys=list(keys))


def commit(
    cache: ProfileCache, service: str, *profiles: Profile, gone: set[int] | None = None
) -> None:
    cache.committed(
        {(service, k): p.id for p in profiles for k in p.keys},
        {p.id: p for p in profiles},
        {p.id: service for p in profiles},
        gone or set(),
    )


def test_committed_profiles_are_found_by_any_of_their_keys() -> None:
    cache = ProfileCache()
    p = profile(1, "a=1", "b=2")
    commit(cache, "web", p)
    assert cache.get("web", "b=2") == (1, p)
    assert cache.get("other", "b=2") is None
    assert cache.get("web", "c=3") is None


def test_a_merged_away_profile_leaves_and_its_keys_follow_the_survivor() -> None:
    cache = ProfileCache()
    commit(cache, "web", profile(1, "a=1"), profile(2, "b=2"))
    survivor = profile(1, "a=1", "b=2")
    commit(cache, "web", survivor, gone={2})
    assert cache.get("web", "b=2") == (1, survivor)
    assert 2 not in cache.profiles


def test_the_least_recently_committed_leave_first() -> None:
    cache = ProfileCache(limit=2)
    one, two, three = profile(1, "a=1"), profile(2, "b=2"), profile(3, "c=3")
    commit(cache, "web", one)
    commit(cache, "web", two)
    commit(cache, "web", one)  # used again: two is now the oldest
    commit(cache, "web", three)
    assert cache.get("web", "b=2") is None
    assert cache.get("web", "a=1") == (1, one)
    assert cache.get("web", "c=3") == (3, three)
    assert set(cache.ids.values()) <= set(cache.profiles)


def test_reset_forgets_everything_and_takes_the_new_version() -> None:
    cache = ProfileCache()
    commit(cache, "web", profile(1, "a=1"))
    cache.reset(7)
    assert cache.version == 7
    assert cache.get("web", "a=1") is None
