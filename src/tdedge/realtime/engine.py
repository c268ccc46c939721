"""The engine: stitch identity, update attributes atomically, evaluate the sections.

``decide`` takes a group of requests and runs their profile updates in one store
transaction (group commit), then evaluates each request's sections against its updated
profile outside the store's lock. ``explain`` is the same path without writing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import msgspec

from tdedge.realtime import profile as profiles
from tdedge.realtime.batch import BatchStore
from tdedge.realtime.criteria import Trace
from tdedge.realtime.profile import Profile
from tdedge.realtime.service import NO_FACTS, Facts, Service
from tdedge.realtime.store import ProfileStore, ProfileTx


class Request(msgspec.Struct, frozen=True):
    service: Service
    table: str
    event: Mapping[str, Any]
    keys: list[str]  # the event's identity keys (never empty)
    public: bool = False


class Updated(msgspec.Struct):
    profile: Profile
    created: bool


class Explained(msgspec.Struct):
    profile: Profile | None  # None: no profile knows these keys
    values: dict[str, Any]
    segments: list[str]
    sections: list[Trace]


class Engine:
    def __init__(self, store: ProfileStore, batch: BatchStore) -> None:
        self.store = store
        self.batch = batch

    def decide(self, requests: Sequence[Request], now_ms: int) -> list[bytes | Exception]:
        """The answer body of each request (or its error); ProfileStoreDown for all."""
        works = [partial(_update, r, now_ms) for r in requests]
        results = self.store.run(works, [(r.service.name, r.keys) for r in requests])
        return self._answers(requests, results, now_ms)

    def try_decide(
        self, requests: Sequence[Request], now_ms: int
    ) -> list[bytes | Exception] | None:
        """``decide``, or None at once when the store is busy with another process."""
        works = [partial(_update, r, now_ms) for r in requests]
        results = self.store.try_run(works, [(r.service.name, r.keys) for r in requests])
        return None if results is None else self._answers(requests, results, now_ms)

    def _answers(
        self, requests: Sequence[Request], results: Sequence[Updated | Exception], now_ms: int
    ) -> list[bytes | Exception]:
        out: list[bytes | Exception] = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, Exception):
                out.append(result)
                continue
            try:
                facts = self.facts(request.service, result.profile, now_ms)
            except Exception as e:  # BatchStoreDown: this request's answer only
                out.append(e)
                continue
            out.append(
                request.service.answer(
                    result.profile,
                    facts,
                    request.table,
                    request.event,
                    result.created,
                    request.public,
                    now_ms,
                )
            )
        return out

    def facts(self, service: Service, profile: Profile, now_ms: int | None = None) -> Facts:
        """Batch facts of a profile; cached when ``now_ms`` is given (the request path)."""
        if not service.needs_facts:
            return NO_FACTS
        if now_ms is None:
            return self.batch.facts(service.name, profile.keys)
        return self.batch.cached_facts(service.name, profile.keys, now_ms)

    def explain(
        self,
        service: Service,
        keys: Sequence[str],
        now_ms: int,
        table: str | None = None,
        event: Mapping[str, Any] | None = None,
    ) -> Explained:
        """Which sections would pass for these keys, and why — changing nothing.

        With an event, the profile is first updated in memory as the request would.
        """
        found = self.store.find(service.name, keys)
        created = not found
        if found:
            profile = found[0]
            for other in found[1:]:
                profiles.merge(profile, other)
        else:
            profile = Profile(id=0, created_ms=now_ms, keys=list(keys))
        service.tidy(profile, now_ms)
        if event is not None:
            service.apply(profile, table or next(iter(sorted(service.event_tables))), event, now_ms)
        facts = self.facts(service, profile)
        traces = service.explain(
            profile, facts, table or "", event or {}, created and event is not None, now_ms
        )
        values = service.values(profile, facts, now_ms, [a.name for a in service.attributes])
        return Explained(
            None if created and event is None else profile,
            values,
            sorted(facts.segments),
            traces,
        )


def _update(request: Request, now_ms: int, tx: ProfileTx) -> Updated:
    service = request.service
    resolution = tx.resolve(service.name, request.keys, now_ms)
    profile = resolution.profile
    if resolution.merged:
        service.tidy(profile, now_ms)
    service.apply(profile, request.table, request.event, now_ms)
    tx.save(service.name, profile)
    return Updated(profile, resolution.created)
