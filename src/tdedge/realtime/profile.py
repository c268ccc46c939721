"""A real-time profile: its identity keys and the state of its attributes.

One profile is one msgspec-encoded JSON document in the profile store, decoded and
re-encoded once per request. State is kept per attribute type, so a configuration that changes an
attribute's type simply stops reading the old state. Merging two profiles (identity
stitching found they are one person) is pure and lives here.
"""

from __future__ import annotations

import msgspec

# The structs are gc=False: they never take part in a reference cycle, and a worker
# keeps thousands of profiles decoded (realtime/cache.py), which the cyclic collector
# would otherwise walk again and again. Dicts holding only them stay untracked too.

# Bound on identity keys joined to one profile (Treasure Data: ≤ 200 ids per profile).
MAX_KEYS = 200


class Single(msgspec.Struct, array_like=True, gc=False):
    value: str | int | float | bool | None
    at_ms: int


class Item(msgspec.Struct, array_like=True, gc=False):
    value: str | int | float | bool
    at_ms: int


class Counter(msgspec.Struct, array_like=True, gc=False):
    """``total`` for all-time counters; ``buckets`` (start second → amount) for windows."""

    total: float = 0.0
    buckets: dict[int, float] = {}
    at_ms: int = 0


class Profile(msgspec.Struct, array_like=True, gc=False):
    id: int
    created_ms: int
    updated_ms: int = 0
    events: int = 0
    keys: list[str] = []  # "column=value", oldest first
    singles: dict[str, Single] = {}
    lists: dict[str, list[Item]] = {}  # newest first
    counters: dict[str, Counter] = {}


_json_encoder = msgspec.json.Encoder()


def encode_json(profile: Profile) -> str:
    return _json_encoder.encode(profile).decode()


def key_of(column: str, value: str) -> str:
    """The stored form of one identity key; column names cannot hold ``=``."""
    return f"{column}={value}"


def split_key(key: str) -> tuple[str, str]:
    column, _, value = key.partition("=")
    return column, value


def merge(survivor: Profile, other: Profile) -> None:
    """Fold ``other`` into ``survivor`` (the older profile keeps its id).

    Singles keep the newer value, list items interleave newest first, counters add up,
    keys are united. Limits (list length, distinctness, windows) are the attributes'
    business: the caller tidies the result with its configuration.
    """
    seen = set(survivor.keys)
    survivor.keys.extend(k for k in other.keys if k not in seen)
    survivor.events += other.events
    survivor.updated_ms = max(survivor.updated_ms, other.updated_ms)
    survivor.created_ms = min(survivor.created_ms, other.created_ms)
    for name, single in other.singles.items():
        mine = survivor.singles.get(name)
        if mine is None or single.at_ms > mine.at_ms:
            survivor.singles[name] = single
    for name, items in other.lists.items():
        both = [*survivor.lists.get(name, []), *items]
        both.sort(key=lambda i: -i.at_ms)
        survivor.lists[name] = both
    for name, counter in other.counters.items():
        mine_c = survivor.counters.setdefault(name, Counter())
        mine_c.total += counter.total
        for start, amount in counter.buckets.items():
            mine_c.buckets[start] = mine_c.buckets.get(start, 0.0) + amount
        mine_c.at_ms = max(mine_c.at_ms, counter.at_ms)
