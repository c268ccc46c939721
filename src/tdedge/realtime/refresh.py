"""Batch segments and imported attributes: SQL over the lake → the batch store.

A segment's query returns its members, named by one of the service's key columns
(``SELECT td_client_id FROM retail.members WHERE tier = 'gold'``). An imported
attribute's query returns a key column and a column named like the attribute (or one
other column). Unqualified table names resolve in the service's database.

Sources refresh on their schedule (``refresh: 1h``; a failed one is retried sooner)
in the loader process (``Refresher``), and on demand with ``tdedge p13n refresh``.

On a shared control database the facts live there (``batch_shared.py``): of the nodes'
refreshers, the one holding the lease computes them (a holder that dies is replaced
once its lease expires), and every one copies what changed into its node's file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import sqlalchemy as sa

from tdedge.config import Settings
from tdedge.control.leases import Keeper
from tdedge.errors import LakeError, TdedgeError
from tdedge.lake.lake import Lake, QueryResult
from tdedge.realtime import batch as batch_store
from tdedge.realtime.batch import ATTRIBUTE, SEGMENT, BatchStore, SourceState, SQLiteBatchStore
from tdedge.realtime.batch_shared import RefreshStores
from tdedge.realtime.errors import ProfileStoreDown, RefreshFailed
from tdedge.realtime.identity import KeyRule
from tdedge.realtime.profile import key_of
from tdedge.realtime.registry import Registry
from tdedge.realtime.service import BatchSource, Service, compile_service
from tdedge.realtime.store import OpenProfiles, OpenRegistry, ProfileStore

log = logging.getLogger("tdedge.p13n")

RETRY_AFTER_FAILURE_MS = 30_000
POLL_S = 1.0
# The profile store's WAL is copied into its database this often. A checkpoint ends in
# an fsync of every page it wrote, on the disk the journal fsyncs too: at 2,000
# decisions/s one checkpoint a second flushed ~8 MB at once, and the answers of that
# moment waited behind it (spikes of 15-45 ms every second). A tenth of that flush
# ten times as often keeps each one short.
CHECKPOINT_S = 0.1
# How long a stopping refresher waits for its lease keeper to hand the lease on.
KEEPER_STOP_S = 5.0


class Outcome(msgspec.Struct, frozen=True):
    service: str
    kind: str
    name: str
    rows: int
    error: str | None = None


def rows_of(
    service: Service, source: BatchSource, result: QueryResult
) -> Iterator[tuple[str, Any]]:
    """(key, value) pairs from a query's result; RefreshFailed when it has no key column."""
    columns = [c.lower() for c in result.columns]
    rules = {r.column.lower(): r for r in service.keys}
    at = next((i for i, c in enumerate(columns) if c in rules), None)
    if at is None:
        raise RefreshFailed(
            f"the query of {source.kind} {source.name!r} returns no key column "
            f"(one of {', '.join(r.column for r in service.keys)}); it returns {columns}"
        )
    rule: KeyRule = rules[columns[at]]
    value_at: int | None = None
    if source.kind == ATTRIBUTE:
        named = [i for i, c in enumerate(columns) if c == source.name.lower() and i != at]
        others = [i for i in range(len(columns)) if i != at]
        if named:
            value_at = named[0]
        elif len(others) == 1:
            value_at = others[0]
        else:
            raise RefreshFailed(
                f"the query of attribute {source.name!r} must return a column named "
                f"{source.name} (or exactly one column besides the key); it returns {columns}"
            )
    for row in result.rows:
        value = rule.value({rule.column: row[at]})
        if value is not None:
            yield key_of(rule.column, value), (None if value_at is None else row[value_at])


def refresh_source(
    lake: Lake, store: BatchStore, service: Service, source: BatchSource, now_ms: int
) -> Outcome:
    """Run one source's query and swap its facts in; failures are recorded, not raised."""
    kind = SEGMENT if source.kind == "segment" else ATTRIBUTE
    try:
        result = lake.query(
            source.sql, service.database if service.database in lake.databases() else None
        )
        count = store.replace(
            service.name, kind, source.name, source.sql, rows_of(service, source, result), now_ms
        )
    except (LakeError, RefreshFailed) as e:
        log.warning(
            "p13n refresh failed",
            extra={"service": service.name, "source": source.name, "error": str(e)},
        )
        store.failed(service.name, kind, source.name, source.sql, str(e), now_ms)
        return Outcome(service.name, kind, source.name, 0, str(e))
    log.info(
        "p13n refreshed", extra={"service": service.name, "source": source.name, "rows": count}
    )
    return Outcome(service.name, kind, source.name, count)


def due(
    services: dict[str, Service], states: list[SourceState], now_ms: int
) -> list[tuple[Service, BatchSource]]:
    """Sources whose refresh is due: never run, changed, past their interval, or failed."""
    by_key = {(s.service, s.kind, s.name): s for s in states}
    out = []
    for service in services.values():
        for source in service.sources:
            kind = SEGMENT if source.kind == "segment" else ATTRIBUTE
            state = by_key.get((service.name, kind, source.name))
            if state is None or state.sql != source.sql:
                out.append((service, source))
                continue
            wait = source.refresh_ms
            if state.error is not None:
                wait = min(wait, RETRY_AFTER_FAILURE_MS)
            if now_ms - state.refreshed_ms >= wait:
                out.append((service, source))
    return out


def compiled(registry: Registry) -> dict[str, Service]:
    applied = registry.active()
    out: dict[str, Service] = {}
    if applied is None:
        return out
    for i, spec in enumerate(applied.config.services):
        service = compile_service(spec, ("services", i), lambda p, m: None)
        if service is not None:
            out[service.name] = service
    return out


def refresh_all(
    settings: Settings,
    registry: Registry,
    store: BatchStore,
    now_ms: int,
    only_due: bool,
    select: Callable[[Service, BatchSource], bool] = lambda s, b: True,
    still_held: Callable[[], bool] = lambda: True,
) -> list[Outcome]:
    """Refresh every source (or those due); opens the lake read-only only if needed.
    ``still_held`` is asked before each source: a refresher that lost its lease stops."""
    services = compiled(registry)
    store.forget(
        {
            (s.name, SEGMENT if b.kind == "segment" else ATTRIBUTE, b.name)
            for s in services.values()
            for b in s.sources
        }
    )
    if only_due:
        todo = due(services, store.sources(), now_ms)
    else:
        todo = [(s, b) for s in services.values() for b in s.sources]
    todo = [(s, b) for s, b in todo if select(s, b)]
    if not todo:
        return []
    lake = Lake.open(settings, read_only=True)
    try:
        outcomes = []
        for s, b in todo:
            if not still_held():
                break
            outcomes.append(refresh_source(lake, store, s, b, now_ms))
        return outcomes
    finally:
        lake.close()


OpenStores = Callable[[Settings], RefreshStores]


def _always() -> bool:
    return True


def local_stores(settings: Settings) -> RefreshStores:
    """The embedded refresher's: the data dir's file, no lease (one loader per data dir)."""
    return RefreshStores(SQLiteBatchStore(batch_store.default_path(settings.root)))


class Refresher:
    """The scheduled refresh: a thread of the loader process (one per data dir)."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        open_profiles: OpenProfiles,
        open_registry: OpenRegistry,
        open_stores: OpenStores = local_stores,
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._open_profiles = open_profiles
        self._open_registry = open_registry
        self._open_stores = open_stores
        self._thread = threading.Thread(target=self._run, name="p13n-refresher", daemon=True)

    def start(self) -> Refresher:
        self._thread.start()
        return self

    def _run(self) -> None:
        settings = self._settings
        while not self._stop.wait(POLL_S):
            opened: list[Registry | RefreshStores | ProfileStore] = []
            try:
                # Opened here, not once: a store that cannot be opened now may be later.
                registry = self._open_registry(settings)
                opened.append(registry)
                stores = self._open_stores(settings)
                opened.append(stores)
                profiles = self._open_profiles(settings)
            except (TdedgeError, OSError, sa.exc.SQLAlchemyError) as e:
                for thing in opened:
                    thing.close()
                log.error("p13n refresher cannot open its stores", extra={"error": str(e)})
                self._stop.wait(RETRY_AFTER_FAILURE_MS / 1000)
                continue
            done = threading.Event()
            keeper = None if stores.lease is None else Keeper(stores.lease, done).start()
            try:
                self._rounds(registry, stores, profiles, keeper)
            finally:
                done.set()
                if keeper is not None:
                    keeper.join(KEEPER_STOP_S)
                profiles.close()
                stores.close()
                registry.close()

    def _rounds(
        self,
        registry: Registry,
        stores: RefreshStores,
        profiles: ProfileStore,
        keeper: Keeper | None,
    ) -> None:
        polled = time.monotonic()
        while not self._stop.wait(CHECKPOINT_S):
            if time.monotonic() - polled >= POLL_S:
                polled = time.monotonic()
                self._round(registry, stores, keeper)
            try:
                # The edge never waits for a checkpoint's fsync; this thread keeps
                # the profile store's WAL short instead.
                profiles.checkpoint()
            except (sqlite3.Error, ProfileStoreDown) as e:
                log.error("p13n profile store checkpoint failed", extra={"error": str(e)})

    def _round(self, registry: Registry, stores: RefreshStores, keeper: Keeper | None) -> None:
        held: Callable[[], bool] = _always if keeper is None else keeper.held
        try:
            if held():
                refresh_all(
                    self._settings,
                    registry,
                    stores.store,
                    int(time.time() * 1000),
                    True,
                    still_held=held,
                )
            if stores.replica is not None:
                stores.replica.sync()
        except (TdedgeError, OSError, sa.exc.SQLAlchemyError) as e:
            log.error("p13n refresher round failed", extra={"error": str(e)})
        except Exception:
            # A bug here must not stop the loader that hosts this thread.
            log.exception("p13n refresher round failed unexpectedly")


def start(
    settings: Settings,
    stop: threading.Event,
    open_profiles: OpenProfiles,
    open_registry: OpenRegistry,
    open_stores: OpenStores = local_stores,
) -> Refresher:
    return Refresher(settings, stop, open_profiles, open_registry, open_stores).start()
