"""The profiles a store connection last committed, kept decoded between groups.

Reading a group's profiles back from SQLite and decoding them costs more than the
updates themselves, and a person's next request usually finds the profile exactly as
this connection left it. The cache holds that state: profiles by id and the identity
index (service, key → id) for the keys it has seen. It knows nothing of other writers;
its owner empties it (``reset``) whenever another connection may have committed, and
whenever a transaction that mutated cached profiles in place is rolled back.

Invariant: every id in ``ids`` is in ``profiles``, and a cached profile's keys that are
in ``ids`` point at it. Bounded: past ``limit`` profiles the least recently used leave.
"""

from __future__ import annotations

from tdedge.realtime.profile import Profile

# Enough for a busy site's active people in one worker; ~2-4 KB each decoded.
DEFAULT_LIMIT = 20_000


class ProfileCache:
    __slots__ = ("ids", "limit", "profiles", "version")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = max(1, limit)
        self.version: object = None  # whatever the owner uses to tell it is still valid
        self.ids: dict[tuple[str, str], int] = {}
        self.profiles: dict[int, tuple[str, Profile]] = {}

    def reset(self, version: object = None) -> None:
        self.version = version
        self.ids.clear()
        self.profiles.clear()

    def get(self, service: str, key: str) -> tuple[int, Profile] | None:
        """The profile ``key`` leads to, if cached."""
        pid = self.ids.get((service, key))
        if pid is None:
            return None
        return pid, self.profiles[pid][1]

    def committed(
        self,
        ids: dict[tuple[str, str], int],
        profiles: dict[int, Profile],
        services: dict[int, str],
        gone: set[int],
    ) -> None:
        """What one transaction committed: its key → id view, its live profiles and the
        ids merged away."""
        cached = self.profiles
        for pid in gone:
            cached.pop(pid, None)
        for pid, profile in profiles.items():
            cached.pop(pid, None)  # to the young end: least recently used leave first
            cached[pid] = (services[pid], profile)
        self.ids.update(ids)
        while len(cached) > self.limit:
            self._evict(next(iter(cached)))

    def _evict(self, pid: int) -> None:
        service, profile = self.profiles.pop(pid)
        for key in profile.keys:
            if self.ids.get((service, key)) == pid:
                del self.ids[(service, key)]
