"""What every profile store's group transaction shares: the profiles a group of works
reads are staged in memory, the works resolve identities and change profiles there, and
the store writes what changed at the end in its own way (store.py says why a group is
one unit). Stitching lives here once, so that every store stitches alike: the oldest
profile survives, the others are folded into it, and their keys follow it.

A store's transaction fills ``_ids``, ``_profiles``, ``_stored`` and ``_services`` in
``prefetch`` and writes ``_dirty``, ``_gone`` and its own record of merges and new keys
(``_merged``, ``_key_added``) in its ``write``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from tdedge.realtime import profile as profiles
from tdedge.realtime.identity import plan
from tdedge.realtime.profile import MAX_KEYS, Profile
from tdedge.realtime.store import Resolution, Work

T = TypeVar("T")


class StagedTx:
    def __init__(self, size: int) -> None:
        self._size = max(1, size)  # the works of the group: profile ids are drawn for as many
        self._ids: dict[tuple[str, str], int] = {}  # key → its profile, as of now
        self._profiles: dict[int, Profile] = {}
        self._stored: set[int] = set()  # profiles the store holds already
        self._services: dict[int, str] = {}
        self._dirty: set[int] = set()  # profiles to write
        self._gone: set[int] = set()  # merged away in this group: never read back
        self._next_id = 0
        self._last_id = -1

    def prefetch(self, service: str, keys: Sequence[str]) -> None:
        raise NotImplementedError

    def _id_block(self, size: int) -> tuple[int, int]:
        """The first and last of ``size`` new profile ids, taken for this group."""
        raise NotImplementedError

    def _merged(self, now_ms: int, service: str, survivor: int, other: Profile) -> None:
        """Record that ``other`` was folded into ``survivor`` (the merge log)."""
        raise NotImplementedError

    def _key_added(self, service: str, key: str) -> None:
        """A key now leads to a profile it did not lead to before (a hook)."""

    def apply(
        self,
        works: Sequence[Work[T]],
        prefetch: Sequence[tuple[str, Sequence[str]]],
        store_errors: tuple[type[BaseException], ...],
    ) -> tuple[list[T | Exception], tuple[int, Exception] | None]:
        """Read what ``prefetch`` names (one read per service), then run the works in
        order until one raises: their results, and the failed work's index and error.
        The store's own errors (``store_errors``) are not a work's failure: they go up."""
        by_service: dict[str, list[str]] = {}
        for service, keys in prefetch:
            by_service.setdefault(service, []).extend(keys)
        for service, keys in by_service.items():
            self.prefetch(service, keys)
        out: list[T | Exception] = []
        for at, work in enumerate(works):
            try:
                out.append(work(self))
            except store_errors:
                raise
            except Exception as e:
                return out, (at, e)
        return out, None

    def resolve(self, service: str, keys: Sequence[str], now_ms: int) -> Resolution:
        self.prefetch(service, keys)
        found = {k: self._ids[(service, k)] for k in keys if (service, k) in self._ids}
        stitch = plan(keys, found)
        if stitch.survivor is None:
            profile = Profile(id=self._new_id(), created_ms=now_ms, updated_ms=now_ms)
            self._profiles[profile.id] = profile
            self._services[profile.id] = service
            self._dirty.add(profile.id)
            self._add_keys(service, profile, stitch.new_keys)
            return Resolution(profile, True, [])
        profile = self._profiles[stitch.survivor]
        for other_id in stitch.merged:
            other = self._profiles.pop(other_id)
            self._gone.add(other_id)
            self._dirty.discard(other_id)
            profiles.merge(profile, other)
            for key in other.keys:
                self._ids[(service, key)] = profile.id
            self._merged(now_ms, service, profile.id, other)
            self._dirty.add(profile.id)
        self._add_keys(service, profile, stitch.new_keys)
        return Resolution(profile, False, stitch.merged)

    def save(self, service: str, profile: Profile) -> None:
        self._dirty.add(profile.id)

    def _add_keys(self, service: str, profile: Profile, keys: list[str]) -> None:
        added = keys[: max(0, MAX_KEYS - len(profile.keys))]
        for key in added:
            self._ids[(service, key)] = profile.id
            self._key_added(service, key)
        if added:
            # The index and the profile's own list of keys are written together.
            profile.keys.extend(added)
            self._dirty.add(profile.id)

    def _new_id(self) -> int:
        if self._next_id > self._last_id:
            # A block for the whole group at once: one round trip, gaps are harmless.
            self._next_id, self._last_id = self._id_block(self._size)
        self._next_id += 1
        return self._next_id - 1
