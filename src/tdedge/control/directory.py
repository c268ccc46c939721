"""A read-mostly, in-memory view of keys and databases with a time-to-live.

The edge (``--auth sync``) and the loader check every record's key; they must not hit
the control database each time. A miss asks the control database for that one key or
database (an indexed point look-up), so a key created a moment ago works at once; a
revocation is seen within the TTL. Misses are remembered for ``NEGATIVE_TTL_S`` so a
flood of records with one bad key costs one look-up, not one per record. Time is passed
in, never read inside.

One Directory serves a whole process: an edge worker's doors answer on the event loop
and the REST API in threads, so every method holds a lock (uncontended on the loop).
"""

from __future__ import annotations

import contextlib
import threading

from tdedge.control.keys import KeyInfo
from tdedge.control.store import ControlStore
from tdedge.errors import AlreadyExists

NEGATIVE_TTL_S = 1.0
# Bound on remembered misses: a flood of distinct bad keys must not grow memory.
MAX_MISSES = 100_000
# Bound on remembered verdicts (``verdicts``): pairs of a key and a database name.
MAX_VERDICTS = 100_000


class Directory:
    def __init__(self, store: ControlStore, ttl_s: float) -> None:
        self._store = store
        self._ttl = ttl_s
        self._keys: dict[bytes, KeyInfo] = {}
        self._owners: dict[str, int] = {}
        self._loaded_at = float("-inf")
        self._misses: dict[bytes | str, float] = {}
        self._verdicts: dict[tuple[bytes, str], str | None] = {}
        self._lock = threading.RLock()

    def _reload(self, now: float) -> None:
        self._keys = self._store.keys_by_hash()
        self._owners = self._store.database_owners()
        self._misses.clear()
        self._verdicts = {}
        self._loaded_at = now

    def verdicts(self, now: float) -> dict[tuple[bytes, str], str | None]:
        """Where a caller may remember what it decided from this directory's facts about
        a (key hash, database name) pair, until the next reload empties it (a new dict).

        Deciding again from the same facts costs a request at the edge more than
        parsing its record. Remember only verdicts made from facts this directory holds
        (a known key; a database with an owner): a miss is looked up again after
        ``NEGATIVE_TTL_S``, so that a key or database created a moment ago works at once,
        and a verdict remembered from it would hide that until the reload.
        """
        verdicts = self._verdicts
        if now - self._loaded_at < self._ttl and len(verdicts) < MAX_VERDICTS:
            # Without the lock: it cost the edge's requests more than the rest of this
            # check. A reload racing this hands back the dict it replaces, whose
            # verdicts were right a moment ago and are dropped with it.
            return verdicts
        with self._lock:
            self.refresh(now)
            if len(self._verdicts) >= MAX_VERDICTS:
                self._verdicts = {}
            return self._verdicts

    def refresh(self, now: float) -> None:
        with self._lock:
            if now - self._loaded_at >= self._ttl:
                self._reload(now)

    def _missed_recently(self, what: bytes | str, now: float) -> bool:
        return now - self._misses.get(what, float("-inf")) < NEGATIVE_TTL_S

    def _missed(self, what: bytes | str, now: float) -> None:
        if len(self._misses) >= MAX_MISSES:
            self._misses.clear()
        self._misses[what] = now

    def key(self, key_hash: bytes, now: float) -> KeyInfo | None:
        with self._lock:
            self.refresh(now)
            info = self._keys.get(key_hash)
            if info is None and not self._missed_recently(key_hash, now):
                info = self._store.key_by_hash(key_hash)
                if info is None:
                    self._missed(key_hash, now)
                else:
                    self._keys[key_hash] = info
            return info

    def database_owner(self, name: str, now: float) -> int | None:
        with self._lock:
            self.refresh(now)
            owner = self._owners.get(name)
            if owner is None and not self._missed_recently(name, now):
                owner = self._store.database_owner(name)
                if owner is None:
                    self._missed(name, now)
                else:
                    self._owners[name] = owner
            return owner

    def databases_of(self, account_id: int, now: float) -> set[str]:
        """The databases ``account_id`` owns, as of the last reload or look-up."""
        with self._lock:
            self.refresh(now)
            return {name for name, owner in self._owners.items() if owner == account_id}

    def create_database(self, name: str, account_id: int) -> int:
        """Create ``name`` for ``account_id``; returns the owner (another writer may have won)."""
        with self._lock:
            with contextlib.suppress(AlreadyExists):
                self._store.create_database(name, account_id)
            self._owners = self._store.database_owners()
            self._misses.pop(name, None)
            self._verdicts = {}
            return self._owners[name]
