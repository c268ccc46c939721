"""The profile store protocol: atomic read-modify-write of one person's profile.

Embedded: SQLite (``sqlite.py``); scale-out: Redis (``redis.py``). Every unit of work
runs inside the store's transaction, which is what makes an update atomic per profile
across worker processes: two requests for one person never both read the old state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec

from tdedge.config import Settings
from tdedge.realtime.profile import Profile

if TYPE_CHECKING:
    from tdedge.realtime.registry import Registry

T = TypeVar("T")


class Resolution(msgspec.Struct):
    """The profile an event's keys lead to, after stitching."""

    profile: Profile
    created: bool  # no profile knew any of the keys before this event
    merged: list[int]  # ids of the profiles folded into this one (now gone)


class Merge(msgspec.Struct, frozen=True):
    """One entry of the merge log."""

    seq: int
    time_ms: int
    service: str
    survivor: int
    merged: int
    keys: list[str]  # the keys that moved from ``merged`` to ``survivor``


class ProfileTx(Protocol):
    def resolve(self, service: str, keys: Sequence[str], now_ms: int) -> Resolution:
        """Stitch ``keys``: find, create or merge their profile (merges are logged)."""
        ...

    def save(self, service: str, profile: Profile) -> None: ...


Work = Callable[[ProfileTx], T]


class ProfileStore(Protocol):
    def run(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]] = ()
    ) -> list[T | Exception]:
        """Run each work atomically, in order, all in one commit (group commit).

        ``prefetch`` names the (service, keys) the works will resolve, so a store can
        read them all at once. A work that raises is undone alone and its exception
        returned in its place; ProfileStoreDown is raised when the store cannot be used.
        """
        ...

    def try_run(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]] = ()
    ) -> list[T | Exception] | None:
        """``run``, or None without waiting when another process is writing: a caller
        that must not block (an event loop) then hands the works to a thread."""
        ...

    def find(self, service: str, keys: Sequence[str]) -> list[Profile]:
        """The distinct profiles ``keys`` point at, oldest first (no writes)."""
        ...

    def merges(self, service: str, profile_id: int | None = None, limit: int = 100) -> list[Merge]:
        """The merge log, newest first; with ``profile_id`` only merges into it."""
        ...

    def set_timeout(self, timeout_s: float) -> None: ...

    def checkpoint(self) -> None:
        """Housekeeping the writers should not wait for (an embedded store's WAL copy),
        run by a background thread every few seconds; a no-op where the store does its
        own."""
        ...

    def close(self) -> None: ...


# How a process opens its profile store and its p13n configuration registry: handed down
# from where the process chooses its backends, so realtime code never picks one itself.
OpenProfiles = Callable[[Settings], ProfileStore]
OpenRegistry = Callable[[Settings], "Registry"]
