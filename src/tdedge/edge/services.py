"""What every door shares inside one worker process: the journal, key checks, counters.

Doors turn requests into Envelopes and call ``append``; this module owns what a
durable append means at the HTTP level (503 + Retry-After when the journal refuses)
and how a refused request still leaves a row for operators (``keep_refused``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from tdedge import metrics
from tdedge.config import Settings
from tdedge.control.keys import hash_key
from tdedge.edge.auth import SyncAuth
from tdedge.edge.http import HTTPError
from tdedge.edge.memo import Memo
from tdedge.edge.offload import Offload
from tdedge.edge.refusals import kept_body
from tdedge.errors import JournalUnavailable
from tdedge.journal.base import Journal
from tdedge.journal.envelope import Envelope

log = logging.getLogger("tdedge.edge")

# A refused body is kept for operators, but not all of it.
REJECT_KEEP_BYTES = 64 * 1024


class Counters:
    """Request counts, handed to prometheus once per event-loop iteration.

    A multiprocess prometheus ``inc`` (a pid check and an mmap write) was a tenth of a
    pixel request's CPU. Requests count in a dict instead, and the first count of an
    iteration schedules one flush after it: a scrape still sees every request answered
    before it, and a busy iteration's requests share one ``inc`` per label set.
    """

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], Any] = {}
        self._pending: dict[tuple[str, str, int], int] = {}

    def inc(self, door: str, route: str, status: int) -> None:
        key = (door, route, status)
        pending = self._pending
        if not pending:
            asyncio.get_running_loop().call_soon(self.flush)
        pending[key] = pending.get(key, 0) + 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, n in pending.items():
            child = self._children.get(key)
            if child is None:
                door, route, status = key
                child = self._children[key] = metrics.REQUESTS.labels(door, route, str(status))
            child.inc(n)


class Services:
    def __init__(self, settings: Settings, journal: Journal, auth: SyncAuth | None) -> None:
        self.settings = settings
        self.journal = journal
        self.auth = auth
        self.counters = Counters()
        # Hashing a key was the costliest step of a pixel request after parsing.
        self.key_hash = Memo(hash_key)
        self.offload = Offload()

    async def append(self, env: Envelope) -> None:
        """Return once ``env`` is durable, or raise the 503 the client should see."""
        await self.append_many((env,))

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        """All of ``envs`` durable together, or the 503 the client should see."""
        try:
            await self.journal.append_many(envs)
        except JournalUnavailable as e:
            raise HTTPError(
                503,
                "journal_unavailable",
                f"cannot accept records right now ({e}); retry later",
                headers=[("retry-after", str(self.settings.retry_after_s))],
            ) from e

    async def accept(
        self, door: str, received_ms: int, database: str, table: str, key: str, record: bytes
    ) -> None:
        """Append one well-formed record; with ``--auth sync`` refuse a bad key first
        (403 with the loader's reason code, the record kept for operators)."""
        key_hash = self.key_hash(key)
        if self.auth is not None:
            reason = self.auth.refusal(key_hash, database)
            if reason is not None:
                refused = HTTPError(403, reason, "the API key may not write to this database")
                refused.body = record
                await self.keep_refused(door, received_ms, database, table, key, refused)
                raise refused
        await self.append(Envelope(received_ms, door, database, table, key_hash, record))

    async def keep_refused(
        self, door: str, received_ms: int, database: str, table: str, key: str | None, e: HTTPError
    ) -> None:
        """Journal a refused request with its reason, so it shows in the import errors."""
        env = Envelope(
            received_ms,
            door,
            database,
            table,
            self.key_hash(key) if key else b"",
            kept_body(e.body, REJECT_KEEP_BYTES),
            reject=e.code,
        )
        try:
            await self.append(env)
        except HTTPError:
            # The journal is full: the client still gets its own error, and the 503
            # metric already counts the refusal.
            log.warning("refused record not kept: journal unavailable", extra={"reason": e.code})

    def close(self) -> None:
        self.offload.close()
        self.journal.close()
        if self.auth is not None:
            self.auth.close()
