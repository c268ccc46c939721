"""The edge: an RSGI application served by granian, one instance per worker process.

Door dispatch happens here; each door's handler turns a request into an Envelope,
appends it to the journal and answers only once the append is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

import msgspec

from tdedge import metrics
from tdedge.config import SETTINGS_ENV, Settings
from tdedge.control.keys import hash_key
from tdedge.edge.auth import SyncAuth, legacy_key
from tdedge.edge.http import (
    EMPTY_OBJECT,
    JSON_HEADERS,
    HTTPError,
    Protocol_,
    Scope,
    encode_json,
    error_body,
    read_body,
)
from tdedge.edge.records import record_from_body
from tdedge.errors import JournalUnavailable
from tdedge.journal.base import Journal
from tdedge.journal.envelope import Envelope
from tdedge.journal.sqlite import SQLiteJournal
from tdedge.loader.heartbeat import read_heartbeat
from tdedge.names import NAME_RULE, is_valid_name, normalize

log = logging.getLogger("tdedge.edge")

POSTBACK_PREFIX = "/postback/v3/event/"
# A refused body is kept for operators, but not all of it.
REJECT_KEEP_BYTES = 64 * 1024
SWITCH_INTERVAL_S = 0.0002
# One failed batch is retried at once; several in a row mean the lake is unreachable.
LOADER_FAILURES_NOT_READY = 3


class _Counters:
    """Cached prometheus children: ``labels()`` on every request costs more than the count."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], Any] = {}

    def inc(self, door: str, route: str, status: int) -> None:
        key = (door, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metrics.REQUESTS.labels(door, route, str(status))
        child.inc()


class EdgeApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._journal: Journal | None = None
        self._auth: SyncAuth | None = None
        self._counters = _Counters()

    # RSGI lifecycle: the journal and its writer thread belong to the worker process.
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The journal's writer thread must get the GIL back as soon as its fsync returns:
        # with the default 5 ms switch interval every group commit waits that long for
        # the event loop to yield, and 64 waiting clients cap the server at ~13k rps.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._journal = SQLiteJournal(self.settings)
        if self.settings.auth == "sync":
            self._auth = SyncAuth(self.settings)
        log.info("edge worker ready", extra={"pid": os.getpid(), "shard": self._journal_shard()})

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._journal is not None:
            self._journal.close()
        if self._auth is not None:
            self._auth.close()

    def _journal_shard(self) -> str:
        return getattr(self._journal, "shard", "")

    async def __rsgi__(self, scope: Scope, proto: Protocol_) -> None:
        path = scope.path
        route = "other"
        try:
            if path.startswith(POSTBACK_PREFIX):
                route = "postback"
                status, headers, body = await self._postback(scope, proto, path)
            elif path == "/healthz":
                route = "healthz"
                status, headers, body = 200, JSON_HEADERS, b'{"status":"ok"}'
            elif path == "/readyz":
                route = "readyz"
                status, headers, body = self._readyz()
            elif path == "/metrics":
                route = "metrics"
                status, headers, body = (
                    200,
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.exposition(),
                )
            else:
                raise HTTPError(404, "not_found", f"no such endpoint: {scope.method} {path}")
        except HTTPError as e:
            status, headers, body = (
                e.status,
                [*JSON_HEADERS, *e.headers],
                error_body(e.code, e.message),
            )
        self._counters.inc("legacy", route, status)
        proto.response_bytes(status, headers, body)

    async def _postback(
        self, scope: Scope, proto: Protocol_, path: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if scope.method != "POST":
            raise HTTPError(405, "method_not_allowed", "use POST", headers=[("allow", "POST")])
        database, _, table = path[len(POSTBACK_PREFIX) :].partition("/")
        if not is_valid_name(database) or not is_valid_name(table):
            raise HTTPError(
                400,
                "invalid_name",
                f"invalid database or table name in {path!r}: {NAME_RULE}",
            )
        database, table = normalize(database), normalize(table)
        received_ms = time.time_ns() // 1_000_000
        key = legacy_key(scope.headers, scope.query_string)
        try:
            body = await read_body(scope, proto, self.settings.max_body_bytes)
            if key is None:
                raise HTTPError(
                    403,
                    "missing_key",
                    "no API key: send X-TD-Write-Key or the td_write_key URL parameter",
                    body=body,
                )
            record = record_from_body(body, scope.headers.get("content-type"))
        except HTTPError as e:
            # Refused at the door: the client is told why, and operators see the record.
            await self._keep_refused(received_ms, database, table, key, e)
            raise
        key_hash = hash_key(key)
        if self._auth is not None:
            reason = self._auth.refusal(key_hash, database)
            if reason is not None:
                refused = HTTPError(403, reason, "the API key may not write to this database")
                refused.body = record
                await self._keep_refused(received_ms, database, table, key, refused)
                raise refused
        env = Envelope(received_ms, "legacy", database, table, key_hash, record)
        await self._append(env)
        return 200, JSON_HEADERS, EMPTY_OBJECT

    async def _append(self, env: Envelope) -> None:
        assert self._journal is not None
        try:
            await self._journal.append(env)
        except JournalUnavailable as e:
            raise HTTPError(
                503,
                "journal_unavailable",
                f"cannot accept records right now ({e}); retry later",
                headers=[("retry-after", str(self.settings.retry_after_s))],
            ) from e

    async def _keep_refused(
        self, received_ms: int, database: str, table: str, key: str | None, e: HTTPError
    ) -> None:
        env = Envelope(
            received_ms,
            "legacy",
            database,
            table,
            hash_key(key) if key else b"",
            e.body[:REJECT_KEEP_BYTES],
            reject=e.code,
        )
        try:
            await self._append(env)
        except HTTPError:
            # The journal is full: the client still gets its own error, and the 503
            # metric already counts the refusal.
            log.warning("refused record not kept: journal unavailable", extra={"reason": e.code})

    def _readyz(self) -> tuple[int, list[tuple[str, str]], bytes]:
        problems: list[str] = []
        if self._journal is None or not self._journal.writable():
            problems.append("journal not writable")
        beat = read_heartbeat(self.settings.loader_heartbeat)
        now = time.time()
        if beat is None:
            problems.append("loader has not started")
        else:
            if now - beat.time > self.settings.loader_heartbeat_timeout_s:
                problems.append(f"loader silent for {now - beat.time:.0f}s")
            if beat.lag_seconds > self.settings.ready_max_lag_s:
                problems.append(f"loader lag {beat.lag_seconds:.1f}s")
            if beat.failures >= LOADER_FAILURES_NOT_READY:
                problems.append(f"loader failed {beat.failures} batches in a row")
        body = encode_json(
            {
                "ready": not problems,
                "problems": problems,
                "journal_backlog": self._journal.backlog() if self._journal else None,
                "loader": msgspec.structs.asdict(beat) if beat else None,
            }
        )
        return (503 if problems else 200), JSON_HEADERS, body


def create_app() -> EdgeApp:
    """granian's factory: the settings come from ``serve`` through the environment."""
    from tdedge import logs

    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    logs.configure(settings.log_level)
    return EdgeApp(settings)
