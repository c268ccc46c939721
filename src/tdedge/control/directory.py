"""A read-mostly, in-memory view of keys and databases with a time-to-live.

The edge (``--auth sync``) and the loader check every record's key; they must not hit
the control database each time. A miss reloads early (at most once per
``min_reload_s``) so a key created a moment ago is seen without waiting for the TTL.
Time is passed in, never read inside.
"""

from __future__ import annotations

import contextlib

from tdedge.control.keys import KeyInfo
from tdedge.control.store import ControlStore
from tdedge.errors import AlreadyExists


class Directory:
    def __init__(self, store: ControlStore, ttl_s: float, min_reload_s: float = 0.5) -> None:
        self._store = store
        self._ttl = ttl_s
        self._min_reload = min_reload_s
        self._keys: dict[bytes, KeyInfo] = {}
        self._owners: dict[str, int] = {}
        self._loaded_at = float("-inf")

    def _reload(self, now: float) -> None:
        self._keys = self._store.keys_by_hash()
        self._owners = self._store.database_owners()
        self._loaded_at = now

    def refresh(self, now: float, *, miss: bool = False) -> None:
        age = now - self._loaded_at
        if age >= self._ttl or (miss and age >= self._min_reload):
            self._reload(now)

    def key(self, key_hash: bytes, now: float) -> KeyInfo | None:
        self.refresh(now)
        info = self._keys.get(key_hash)
        if info is None:
            self.refresh(now, miss=True)
            info = self._keys.get(key_hash)
        return info

    def database_owner(self, name: str, now: float) -> int | None:
        self.refresh(now)
        owner = self._owners.get(name)
        if owner is None:
            self.refresh(now, miss=True)
            owner = self._owners.get(name)
        return owner

    def create_database(self, name: str, account_id: int) -> int:
        """Create ``name`` for ``account_id``; returns the owner (another writer may have won)."""
        with contextlib.suppress(AlreadyExists):
            self._store.create_database(name, account_id)
        self._owners = self._store.database_owners()
        return self._owners[name]
