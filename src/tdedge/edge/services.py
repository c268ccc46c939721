"""What every door shares inside one worker process: the journal, key checks, counters.

Doors turn requests into Envelopes and call ``append``; this module owns what a
durable append means at the HTTP level (503 + Retry-After when the journal refuses)
and how a refused request still leaves a row for operators (``keep_refused``, within
the budget refusals.py describes).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgspec

from tdedge import backends, metrics
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.edge.auth import SyncAuth
from tdedge.edge.http import HTTPError, Scope
from tdedge.edge.memo import Memo
from tdedge.edge.offload import Offload
from tdedge.edge.peers import TrustedProxies
from tdedge.edge.refusals import KEY_REASONS, RefusalBudget, keep_bytes, kept_body, source_of
from tdedge.edge.throttle import Throttle
from tdedge.errors import JournalUnavailable
from tdedge.journal.base import Journal
from tdedge.journal.envelope import Envelope
from tdedge.realtime import batch as batch_store
from tdedge.realtime.batch import SQLiteBatchStore
from tdedge.realtime.registry import Registry
from tdedge.realtime.store import ProfileStore

log = logging.getLogger("tdedge.edge")


# The request being answered, for what the doors' shared code must know of it: where it
# came from (refusal budgets, the throttle) and whether it was refused without a 4xx.
# Set by EdgeApp for each request.
@dataclass(slots=True)
class RequestState:
    scope: Scope
    refused: bool = False


REQUEST: ContextVar[RequestState] = ContextVar("tdedge_request")
UNKNOWN_SOURCE = "unknown"
# The reason code of a request not read because its address was refused too much.
THROTTLED = "source_throttled"
# Addresses whose throttling was logged recently, at most (then forgotten together).
MAX_LOGGED = 1_000


class Counters:
    """Counts of one labelled counter, handed to prometheus once per event-loop iteration.

    A multiprocess prometheus ``inc`` (a pid check and an mmap write) was a tenth of a
    pixel request's CPU. Requests count in a dict instead, and the first count of an
    iteration schedules one flush after it: a scrape still sees every request answered
    before it, and a busy iteration's requests share one ``inc`` per label set.
    """

    def __init__(self, metric: Any = metrics.REQUESTS) -> None:
        self._metric = metric
        self._children: dict[tuple[object, ...], Any] = {}
        self._pending: dict[tuple[object, ...], int] = {}

    def inc(self, *labels: object) -> None:
        pending = self._pending
        if not pending:
            asyncio.get_running_loop().call_soon(self.flush)
        pending[labels] = pending.get(labels, 0) + 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, n in pending.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._metric.labels(*map(str, key))
            child.inc(n)


class Services:
    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        # One control store (one SQLAlchemy engine) and one key cache per worker, shared
        # by every door: keys and databases are looked up, refreshed and closed once.
        self.control = backends.control(settings)
        self.directory = Directory(self.control, ttl_s=settings.key_cache_ttl_s)
        # The access rule on the worker's key cache. With --auth sync the doors refuse
        # at once (403); with async they answer 200 and keep a refusal (_screen).
        self._keys = SyncAuth(settings, self.directory)
        self.auth = self._keys if settings.auth == "sync" else None
        self._registry: Registry | None = None
        self._profiles: ProfileStore | None = None
        self._batch: SQLiteBatchStore | None = None
        self.counters = Counters()
        # door, reason, kept: "row", "summary" (counted in a summary row) or "none"
        self.refusals = Counters(metrics.REFUSALS)
        # Hashing a key was the costliest step of a pixel request after parsing.
        self.key_hash = Memo(hash_key)
        self.offload = Offload()
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._budget = RefusalBudget(settings, time.monotonic())
        self.throttle = Throttle(
            settings.refusal_share, settings.refusal_burst_s, settings.refusal_max_wait_s
        )
        self._throttled_logged: dict[str, float] = {}
        self._summary: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Task[None]] = set()

    async def append(self, env: Envelope, screened: bool = False) -> None:
        """Return once ``env`` is durable, or raise the 503 the client should see."""
        await self.append_many((env,), screened)

    async def append_many(self, envs: Sequence[Envelope], screened: bool = False) -> None:
        """All of ``envs`` durable together, or the 503 the client should see.
        ``screened``: the door already asked the access rule about their key (the p13n
        door does, before it answers), so asking again would only cost time."""
        if self.auth is None and not screened:
            envs = self._screen(envs)
            if not envs:
                return
        try:
            await self.journal.append_many(envs)
        except JournalUnavailable as e:
            raise self.unavailable(e) from e

    def _screen(self, envs: Sequence[Envelope]) -> Sequence[Envelope]:
        """With ``--auth async``, records whose key is unknown, revoked or another account's,
        as the access rule says now: answered 200 as Treasure Data does, but kept as refusals
        (their first ``refused_key_keep_bytes``, within the address's budget) rather
        than journaled whole, and charged to the address like any refusal.

        Anyone can send records with made-up keys; journaled whole they cost the disk
        their full size, fsynced, and every other client's commits waited behind them.
        The loader checks again what passes here (a key revoked in between).
        """
        if len(envs) == 1:
            # Most requests carry one record: no verdicts to share between records.
            env = envs[0]
            reason = self._key_refusal(env)
            if reason is None:
                return envs
            refused = self._refused_quietly(env, reason)
            return () if refused is None else (refused,)
        verdicts: dict[tuple[bytes, str], str | None] = {}
        kept: list[Envelope] | None = None
        for i, env in enumerate(envs):
            if env.reject or not env.key_hash:
                reason = None  # not remembered: another record may carry the same key
            else:
                ident = (env.key_hash, env.database)
                if ident in verdicts:
                    reason = verdicts[ident]
                else:
                    reason = verdicts[ident] = self._key_refusal(env)
            if reason is None:
                if kept is not None:
                    kept.append(env)
                continue
            if kept is None:
                kept = list(envs[:i])
            refused = self._refused_quietly(env, reason)
            if refused is not None:
                kept.append(refused)
        return envs if kept is None else kept

    def _key_refusal(self, env: Envelope) -> str | None:
        """Why ``env``'s key may not write at all (a key reason), or None."""
        if env.reject or not env.key_hash:
            return None
        reason = self._keys.refusal(env.key_hash, env.database)
        # A valid key on a database it may not write (a missing one, say): only its
        # owner can send that, so the loader decides and keeps the record whole.
        return reason if reason in KEY_REASONS else None

    def _refused_quietly(self, env: Envelope, reason: str) -> Envelope | None:
        """The import-error envelope of ``env`` if its address's budget keeps it."""
        state = REQUEST.get(None)
        if state is not None:
            state.refused = True
        source = self.source(state.scope) if state is not None else UNKNOWN_SOURCE
        if not self._budget.admit(source, time.monotonic()):
            self._budget.count(source, env.door, reason, env.received_ms)
            self.refusals.inc(env.door, reason, "summary")
            self._summary_due()
            return None
        self.refusals.inc(env.door, reason, "row")
        record = kept_body(env.record, self.settings.refused_key_keep_bytes)
        return msgspec.structs.replace(env, record=record, reject=reason)

    def unavailable(self, e: JournalUnavailable) -> HTTPError:
        """The 503 a client gets when the journal cannot take its records."""
        return HTTPError(
            503,
            "journal_unavailable",
            f"cannot accept records right now ({e}); retry later",
            headers=[("retry-after", str(self.settings.retry_after_s))],
        )

    def authorize(self, key: str, database: str) -> None:
        """With ``--auth sync``, the 403 (with the loader's reason code) for a key that may
        not write to ``database``; checked before the body is parsed."""
        if self.auth is None:
            return
        reason = self.auth.refusal(self.key_hash(key), database)
        if reason is not None:
            raise HTTPError(403, reason, "the API key may not write to this database")

    async def accept(
        self, door: str, received_ms: int, database: str, table: str, key: str, record: bytes
    ) -> None:
        """Append one well-formed record whose key passed ``authorize``."""
        await self.append(Envelope(received_ms, door, database, table, self.key_hash(key), record))

    def keep_bytes(self, reason: str) -> int:
        """How much of a body refused for ``reason`` an import-error row keeps."""
        return keep_bytes(self.settings, reason)

    async def keep_refused(
        self,
        door: str,
        received_ms: int,
        database: str,
        table: str,
        key: str | None,
        e: HTTPError,
        scope: Scope,
    ) -> None:
        """Journal a refused request with its reason, so it shows in the import errors
        (within the budget); the client gets its own error whatever happens here."""
        key_hash = self.key_hash(key) if key else b""
        try:
            await self.refuse(
                door, received_ms, database, table, key_hash, e.body, e.code, scope, e.message
            )
        except HTTPError:
            # The journal is full: the refusal is counted, and so is the 503.
            log.warning("refused record not kept: journal unavailable", extra={"reason": e.code})

    def source(self, scope: Scope) -> str:
        """The client address a request is charged to (refusal rows and the throttle)."""
        return source_of(self._proxies.request_ip(scope))

    def throttled(self, door: str, source: str) -> HTTPError:
        """The 429 for a request from an address whose refusals took more than its share:
        counted, summarised like refusals not kept, and logged once per summary interval."""
        now = time.monotonic()
        self._budget.count(source, door, THROTTLED, time.time_ns() // 1_000_000)
        self.refusals.inc(door, THROTTLED, "summary")
        self._summary_due()
        if now - self._throttled_logged.get(source, -math.inf) > (
            self.settings.refusals_summary_interval_s
        ):
            if len(self._throttled_logged) >= MAX_LOGGED:
                self._throttled_logged.clear()
            self._throttled_logged[source] = now
            log.warning(
                "client address throttled: its refused requests take more than its share "
                "of this worker (if it is a proxy, list it with --trusted-proxy)",
                extra={"client": source, "door": door},
            )
        retry = self.throttle.retry_after(source, now)
        return HTTPError(
            429,
            THROTTLED,
            "too many refused requests from this address; retry later",
            # Answered unread, while its body may still be on its way: the connection
            # closes after it, and saying so keeps a keep-alive client from sending its
            # next request on it (a flooding client pays a new connection each time).
            headers=[("retry-after", str(retry)), ("connection", "close")],
        )

    async def refuse(
        self,
        door: str,
        received_ms: int,
        database: str,
        table: str,
        key_hash: bytes,
        body: bytes,
        reason: str,
        scope: Scope,
        detail: str = "",
    ) -> None:
        """Journal one refused record, capped, if its source is within its budget;
        otherwise count it for the next summary. Raises the 503 if the journal refuses."""
        source = source_of(self._proxies.request_ip(scope))
        if not self._budget.admit(source, time.monotonic()):
            self._budget.count(source, door, reason, received_ms)
            self.refusals.inc(door, reason, "summary")
            self._summary_due()
            return
        record = kept_body(body, self.keep_bytes(reason))
        try:
            await self.append(
                Envelope(
                    received_ms,
                    door,
                    database,
                    table,
                    key_hash,
                    record,
                    reject=reason,
                    reject_detail=detail,
                )
            )
        except HTTPError:
            self.refusals.inc(door, reason, "none")
            raise
        self.refusals.inc(door, reason, "row")

    def _summary_due(self) -> None:
        if self._summary is None:
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(
                self.settings.refusals_summary_interval_s, self._summarize
            )

    def _summarize(self) -> None:
        self._summary = None
        task = asyncio.get_running_loop().create_task(self._write_summaries())
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write_summaries(self) -> None:
        summaries = self._budget.summaries(time.time_ns() // 1_000_000)
        try:
            await self.append_many(summaries)
        except HTTPError:
            # Counted already (kept="summary"); only the rows are missing.
            log.warning("refusal summaries not kept: journal unavailable")

    @property
    def registry(self) -> Registry:
        """The p13n configuration's registry, on the worker's control store (opened when
        a p13n or CDP request first needs it)."""
        if self._registry is None:
            self._registry = Registry(self.control.engine)
        return self._registry

    @property
    def profiles(self) -> ProfileStore:
        """The real-time profiles, for the doors that read them in this worker (the CDP
        door; the p13n door with an inline engine): opened when first needed."""
        if self._profiles is None:
            self._profiles = backends.profiles(self.settings)
        return self._profiles

    @property
    def batch(self) -> SQLiteBatchStore:
        """The batch segments and imported attributes, opened when first needed."""
        if self._batch is None:
            self._batch = SQLiteBatchStore(batch_store.default_path(self.settings.root))
        return self._batch

    def close(self) -> None:
        """Close everything this worker opened."""
        if self._summary is not None:
            self._summary.cancel()
        self.offload.close()
        self.journal.close()
        for store in (self._batch, self._profiles, self._registry):
            if store is not None:
                store.close()
        self.control.close()
