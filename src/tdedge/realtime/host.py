"""The engine process: one per data dir, and the only writer of the profile store.

Edge workers do everything a p13n request needs before the engine — HTTP, the key and
token checks, the event's fsync in the journal — and send the rest here over a Unix
socket (``realtime/wire.py``); the request waits for the answer. The default
(``--p13n-engine process``); with ``inline`` each worker runs an engine itself. What the
process is for:

- Engines of several workers queue on the store's lock: a worker whose group finds it
  taken hands the group to a thread that waits for it (GIL hand-offs included), and
  each commit empties the other workers' caches of decoded profiles
  (``realtime/cache.py``). One engine is the store's one writer: its cache stays
  valid, and its lock is only contended by the loader's checkpoint.
- The worker's event loop is left the HTTP. Measured on two cores (interleaved rounds,
  docs/performance.md): ~40 % more decisions/s than inline engines, at the same p99 at 2,000/s; the
  hop costs ~0.4 ms of p50.

Requests of every connection that arrive in one event-loop iteration are decided as
one group (``realtime/batcher.py``), and each connection gets its answers in one frame.
The stores open on the first request; until they can, every request is answered with
the store's error code (500 at the door), and opening is tried again a second later.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import sqlalchemy as sa
from prometheus_client import Counter

from tdedge import draining, lifecycle
from tdedge.config import Settings
from tdedge.realtime import batch as batch_store
from tdedge.realtime.batch import SQLiteBatchStore
from tdedge.realtime.batcher import Batcher, Result
from tdedge.realtime.collector import freeze_survivors
from tdedge.realtime.engine import Engine, Request
from tdedge.realtime.errors import ProfileStoreDown, StoreUnavailable
from tdedge.realtime.offers import EMPTY
from tdedge.realtime.store import OpenProfiles, OpenRegistry
from tdedge.realtime.view import View
from tdedge.realtime.wire import OK, Answer, Ask, FramedProtocol, bind_unix, decode_asks

log = logging.getLogger("tdedge.p13n")

# After the stores failed to open, requests are answered with that error for this long
# before opening is tried again.
REOPEN_AFTER_S = 1.0
UNEXPECTED = 9999
UNCONFIGURED = Counter(
    "tdedge_p13n_unconfigured_total",
    "Events stored while a configuration change took their table out of the p13n "
    "configuration: answered with no offers, no profile updated",
)
_event_decoder = msgspec.json.Decoder()


class Peer(Protocol):
    """Where a worker's answers go (its ``Connection``)."""

    def send(self, answers: list[Answer]) -> None: ...


class EngineHost:
    """Decides the asks of every connected worker."""

    _view: View
    _batcher: Batcher

    def __init__(
        self,
        settings: Settings,
        open_profiles: OpenProfiles,
        open_registry: OpenRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._open_profiles = open_profiles
        self._open_registry = open_registry
        self._clock = clock
        self._opened: list[Any] = []
        self._failure: StoreUnavailable | None = None
        self._retry_at = float("-inf")
        self._configured = -1  # the view generation the store timeout was taken from
        self._unfreeze: Callable[[], None] | None = None

    def _open(self, now: float) -> None:
        if self._opened:
            return
        if self._failure is not None and now < self._retry_at:
            # A fresh error each time: one raised again and again would keep every
            # traceback it went through.
            raise type(self._failure)(str(self._failure))
        root = self._settings.root
        opened: list[Any] = []
        try:
            registry = self._open_registry(self._settings)
            opened.append(registry)
            store = self._open_profiles(self._settings)
            opened.append(store)
            batch = SQLiteBatchStore(batch_store.default_path(root))
            opened.append(batch)
        except (StoreUnavailable, OSError, sqlite3.Error, sa.exc.SQLAlchemyError) as e:
            for thing in opened:
                thing.close()
            failure = e if isinstance(e, StoreUnavailable) else ProfileStoreDown(str(e))
            log.error("p13n stores cannot be opened", extra={"error": str(e)})
            self._failure, self._retry_at = failure, now + REOPEN_AFTER_S
            raise failure from None
        self._view = View(registry)
        self._store = store
        self._batcher = Batcher(Engine(store, batch), self._clock, self._settle)
        self._opened = opened
        self._failure = None
        # The stores and what they imported live as long as the process, and so do the
        # profiles it decodes from now on: out of the collector's full passes, which
        # every group in flight would wait out (realtime/collector.py).
        gc.freeze()
        if self._unfreeze is None:
            self._unfreeze = freeze_survivors()
        log.info("p13n engine ready", extra={"pid": os.getpid()})

    def close(self) -> None:
        for thing in self._opened:
            thing.close()
        self._opened = []
        if self._unfreeze is not None:
            self._unfreeze()
            self._unfreeze = None

    def take(self, conn: Peer, asks: list[Ask]) -> None:
        """Queue a frame's asks for this iteration's group (on the event loop)."""
        if not asks:
            return
        now = time.monotonic()
        try:
            self._open(now)
            view = self._view
            view.refresh(now, max(a.generation for a in asks))
            if view.generation != self._configured:
                self._configured = view.generation
                self._store.set_timeout(view.limits.store_timeout_ms / 1000)
        except StoreUnavailable as e:
            conn.send([Answer(a.id, e.code, str(e).encode()) for a in asks])
            return
        early: list[Answer] = []  # answered here, without the engine
        services = view.services
        batcher = self._batcher
        for ask in asks:
            service = services.get(ask.service)
            if service is None or ask.table not in service.event_tables:
                # The configuration changed between the worker's check and this one.
                # The event is already in the journal, so a 400 would tell the caller
                # it was not taken: the configuration now in force has no profile for
                # it, and no offers (an inline engine decides with the service the
                # worker checked, so it never sees this).
                UNCONFIGURED.inc()
                log.warning(
                    "p13n event stored after its table left the configuration",
                    extra={"service": ask.service, "table": ask.table},
                )
                early.append(Answer(ask.id, OK, EMPTY))
                continue
            try:
                event = _event_decoder.decode(ask.event)
            except msgspec.DecodeError:
                event = None
            if not isinstance(event, dict):
                early.append(Answer(ask.id, 3004, b"the body must be one JSON object"))
                continue
            request = Request(service, ask.table, event, ask.keys, ask.public)
            batcher.add(request, (conn, ask.id))
        if early:
            conn.send(early)

    def _settle(self, tags: list[tuple[Peer, int]], results: list[Result]) -> None:
        """A group's answers, one frame per connection."""
        frames: dict[Peer, list[Answer]] = {}
        for (conn, ask_id), result in zip(tags, results, strict=True):
            if type(result) is bytes:
                answer = Answer(ask_id, OK, result)
            elif isinstance(result, StoreUnavailable):
                answer = Answer(ask_id, result.code, str(result).encode())
            else:
                answer = Answer(ask_id, UNEXPECTED, repr(result).encode())
            answers = frames.get(conn)
            if answers is None:
                answers = frames[conn] = []
            answers.append(answer)
        for conn, answers in frames.items():
            conn.send(answers)


class Connection(FramedProtocol):
    """One worker's connection: its frames of asks go to the host."""

    def __init__(self, host: EngineHost) -> None:
        super().__init__()
        self._host = host

    def received(self, payload: bytes) -> None:
        self._host.take(self, decode_asks(payload))


def run(
    settings: Settings,
    open_profiles: OpenProfiles,
    open_registry: OpenRegistry,
    parent_pid: int | None = None,
) -> None:
    """The engine process: serves ``settings.p13n_socket`` until SIGTERM or SIGINT, or
    until ``serve`` (``parent_pid``) is gone."""
    import uvloop

    lock_fd = lifecycle.role_lock(settings, "p13n-engine", lifecycle.stop_event(parent_pid))
    if lock_fd is None:
        return
    if parent_pid is not None:
        lifecycle.exit_with_parent(parent_pid)
    try:
        uvloop.run(_serve(settings, open_profiles, open_registry))
    finally:
        os.close(lock_fd)


async def _serve(
    settings: Settings, open_profiles: OpenProfiles, open_registry: OpenRegistry
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # SIGTERM: the node drains (draining.py), and its edge workers ask for decisions
    # until they stop: serve them until the grace is over.
    loop.add_signal_handler(
        signal.SIGTERM, lambda: loop.call_later(draining.remaining(settings), stop.set)
    )
    host = EngineHost(settings, open_profiles, open_registry)
    sock = bind_unix(settings.p13n_socket)
    server = await loop.create_unix_server(lambda: Connection(host), sock=sock)
    log.info("p13n engine listening", extra={"socket": str(settings.p13n_socket)})
    try:
        await stop.wait()
    finally:
        server.close()
        host.close()
        settings.p13n_socket.unlink(missing_ok=True)
