"""The scale-out profile store: real-time profiles in Redis, shared by every node.

Same semantics as the embedded store (``sqlite.py``): each group of works runs as one
transaction, a work that raises is undone alone, stitching and merges follow
``identity.plan``, and merges are logged. Atomicity across processes and nodes comes
from optimistic transactions: the group WATCHes the identity keys it reads and the
profiles they point at, runs the works in memory, and writes everything back in one
MULTI/EXEC. If anyone else wrote one of those keys meanwhile, EXEC does nothing and
the group runs again from a fresh read (works are pure functions of the stored state,
so running them again gives the same result). Two nodes counting the same person
therefore never both read the old count.

Key layout, every key of a service under the hash tag ``{service}`` so that on Redis
Cluster a transaction over one service's profiles, keys and merge log stays in one
hash slot (one service then lives on one shard; services spread over the cluster):

- ``tdedge:p13n:{S}:key:<column=value>`` → the profile id the identity key points at
- ``tdedge:p13n:{S}:profile:<id>`` → the Profile, msgspec JSON
- ``tdedge:p13n:{S}:merges`` → sorted set of the merge log (score: its seq)
- ``tdedge:p13n:{S}:merges:<survivor>`` → the same entries, by survivor
- ``tdedge:p13n:{S}:merge-seq`` → the merge log's sequence
- ``tdedge:p13n:ids`` → the profile id sequence, shared by all services as in the
  embedded store. Ids are taken in blocks outside the transaction (INCRBY): a retried
  group leaves a gap, which is harmless; ids only grow.

A group whose works span services is one transaction over several services' keys:
fine on one Redis server; on a cluster such a group would have to be split by service.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync everysec`` a crash of
the Redis host can lose about the last second of profile updates (never an event: the
door journals it first); docs/redis-profiles.md has the figures.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from tdedge.realtime.errors import ProfileStoreDown
from tdedge.realtime.profile import Profile
from tdedge.realtime.staging import StagedTx
from tdedge.realtime.store import Merge, Work

T = TypeVar("T")

_PREFIX = "tdedge:p13n"
_IDS = f"{_PREFIX}:ids"
# A group that keeps losing races backs off a little (random, so two nodes do not
# collide again in step), never longer than this.
_CONFLICT_PAUSE_MAX_S = 0.005
_json = msgspec.json.Encoder()
_profile_decoder = msgspec.json.Decoder(Profile)
_merge_decoder = msgspec.json.Decoder(Merge)


def _key(service: str, key: str) -> str:
    return f"{_PREFIX}:{{{service}}}:key:{key}"


def _profile(service: str, pid: int) -> str:
    return f"{_PREFIX}:{{{service}}}:profile:{pid}"


def _merges(service: str, survivor: int | None = None) -> str:
    log = f"{_PREFIX}:{{{service}}}:merges"
    return log if survivor is None else f"{log}:{survivor}"


def _merge_seq(service: str) -> str:
    return f"{_PREFIX}:{{{service}}}:merge-seq"


class _Conflict(Exception):
    """Another writer changed what the group read: run the group again."""


class _GroupTx(StagedTx):
    """The ProfileTx of one group: watched reads, works in memory, one MULTI/EXEC."""

    def __init__(self, client: redis.Redis, pipe: Pipeline, size: int) -> None:
        super().__init__(size)
        self._client = client
        self._pipe = pipe
        self._read: dict[tuple[str, str], int] = {}  # key → its profile, as stored
        self._looked_up: set[tuple[str, str]] = set()
        self._merges: list[tuple[int, str, int, int, list[str]]] = []

    def prefetch(self, service: str, keys: Sequence[str]) -> None:
        todo = [k for k in dict.fromkeys(keys) if (service, k) not in self._looked_up]
        if not todo:
            return
        pipe = self._pipe
        names = [_key(service, k) for k in todo]
        pipe.watch(*names)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        found: dict[str, int] = {}
        for key, raw in zip(todo, pipe.mget(names), strict=True):
            self._looked_up.add((service, key))
            if raw is not None:
                found[key] = int(raw)
        wanted = sorted({pid for pid in found.values()} - self._profiles.keys() - self._gone)
        if wanted:
            names = [_profile(service, pid) for pid in wanted]
            pipe.watch(*names)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            for pid, raw in zip(wanted, pipe.mget(names), strict=True):
                if raw is None:
                    continue  # an index entry without its profile: the keys are free
                self._profiles[pid] = _profile_decoder.decode(raw)
                self._stored.add(pid)
                self._services[pid] = service
        for key, pid in found.items():
            if pid in self._profiles or pid in self._gone:
                self._read[(service, key)] = pid
                self._ids.setdefault((service, key), pid)

    def _id_block(self, size: int) -> tuple[int, int]:
        # On its own connection: not part of the transaction, so a retried group only
        # leaves a gap.
        top = int(self._client.incrby(_IDS, size))
        return top - size + 1, top

    def _merged(self, now_ms: int, service: str, survivor: int, other: Profile) -> None:
        self._merges.append((now_ms, service, survivor, other.id, list(other.keys)))

    def write(self) -> None:
        """Everything the works changed, in one MULTI/EXEC; _Conflict if it was raced."""
        seqs: list[int] = []
        by_service: dict[str, int] = {}
        for _, service, *_rest in self._merges:
            by_service[service] = by_service.get(service, 0) + 1
        firsts: dict[str, int] = {}
        for service, n in by_service.items():
            firsts[service] = int(self._client.incrby(_merge_seq(service), n)) - n + 1
        for _, service, *_rest in self._merges:
            seqs.append(firsts[service])
            firsts[service] += 1
        pipe = self._pipe
        pipe.multi()
        for pid in self._gone & self._stored:
            pipe.delete(_profile(self._services[pid], pid))
        changed = {
            _key(service, key): pid
            for (service, key), pid in self._ids.items()
            if self._read.get((service, key)) != pid
        }
        if changed:
            pipe.mset(changed)
        states = {
            _profile(self._services[pid], pid): _json.encode(self._profiles[pid])
            for pid in self._dirty
            if pid in self._profiles
        }
        if states:
            pipe.mset(states)
        for seq, (time_ms, service, survivor, merged, keys) in zip(seqs, self._merges, strict=True):
            entry = _json.encode(Merge(seq, time_ms, service, survivor, merged, keys))
            pipe.zadd(_merges(service), {entry: seq})
            pipe.zadd(_merges(service, survivor), {entry: seq})
        try:
            pipe.execute()
        except redis.WatchError as e:
            if "changed" in str(e):
                raise _Conflict from None
            # The connection died around EXEC: whether it committed is unknown, so the
            # group is not run again (it could count twice).
            raise ProfileStoreDown(f"profile store connection lost: {e}") from e


class RedisProfileStore:
    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self._url = url
        self._timeout_s = timeout_s
        try:
            # One quick retry on a new connection (a pooled one may be stale after a
            # Redis restart); commands inside a WATCH are never retried by the client.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
        except (ValueError, redis.RedisError) as e:
            raise ProfileStoreDown(f"cannot open the profile store {url}: {e}") from e

    def set_timeout(self, timeout_s: float) -> None:
        """Bounds each Redis call on new connections and the time a group may keep
        losing races before ProfileStoreDown."""
        self._timeout_s = timeout_s
        kwargs = self._client.connection_pool.connection_kwargs
        kwargs["socket_timeout"] = timeout_s
        kwargs["socket_connect_timeout"] = timeout_s

    def close(self) -> None:
        self._client.close()

    def checkpoint(self) -> None:
        """Redis persists by itself (its append-only file)."""

    # Writes.
    def run(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]] = ()
    ) -> list[T | Exception]:
        out = self._run(works, prefetch, wait=True)
        assert out is not None
        return out

    def try_run(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]] = ()
    ) -> list[T | Exception] | None:
        """Nothing here waits on another writer's lock; a group that loses a race to
        another writer returns None instead of running again, so the caller retries it
        off its event loop."""
        return self._run(works, prefetch, wait=False)

    def _run(
        self,
        works: Sequence[Work[T]],
        prefetch: Sequence[tuple[str, Sequence[str]]],
        wait: bool,
    ) -> list[T | Exception] | None:
        if not works:
            return []
        deadline = time.monotonic() + self._timeout_s
        pause = 0.0001
        while True:
            try:
                return self._attempt(works, prefetch, wait)
            except _Conflict:
                if not wait:
                    return None
                if time.monotonic() >= deadline:
                    raise ProfileStoreDown(
                        f"profile store busy for more than {self._timeout_s:g}s"
                    ) from None
                time.sleep(random.uniform(0, pause))
                pause = min(pause * 2, _CONFLICT_PAUSE_MAX_S)

    def _attempt(
        self,
        works: Sequence[Work[T]],
        prefetch: Sequence[tuple[str, Sequence[str]]],
        wait: bool,
    ) -> list[T | Exception] | None:
        """One try at the group. If a work raises, nothing of the group is written and
        the others run again without it, as in the embedded store."""
        try:
            with self._client.pipeline(transaction=True) as pipe:
                tx = _GroupTx(self._client, pipe, len(works))
                out, failed = tx.apply(
                    works, prefetch, (redis.RedisError, _Conflict, ProfileStoreDown)
                )
                if failed is None:
                    tx.write()
        except redis.WatchError:
            # The connection died while watching: nothing was sent to commit.
            raise _Conflict from None
        except redis.RedisError as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        if failed is None:
            return out
        at, error = failed
        rest = [*works[:at], *works[at + 1 :]]
        again = self._run(rest, prefetch, wait) if rest else []
        if again is None:
            return None
        return [*again[:at], error, *again[at:]]

    # Reads.
    def find(self, service: str, keys: Sequence[str]) -> list[Profile]:
        if not keys:
            return []
        try:
            ids = {int(raw) for raw in self._client.mget([_key(service, k) for k in keys]) if raw}
            if not ids:
                return []
            raws = self._client.mget([_profile(service, pid) for pid in sorted(ids)])
        except redis.RedisError as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        return [_profile_decoder.decode(raw) for raw in raws if raw is not None]

    def merges(self, service: str, profile_id: int | None = None, limit: int = 100) -> list[Merge]:
        if limit <= 0:
            return []
        try:
            raws: list[Any] = self._client.zrevrange(_merges(service, profile_id), 0, limit - 1)
        except redis.RedisError as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        return [_merge_decoder.decode(raw) for raw in raws]
