"""The embedded journal: one SQLite file (WAL, synchronous=FULL) per edge worker.

Each worker process owns a shard, claimed with an exclusive ``flock`` on its lock file,
so shards never share a writer and a restarted worker takes over a dead one's shard.
Appends are group-committed: requests queue their envelope and await a future; one
writer thread inserts everything queued, commits (one fsync for the whole group) and
resolves every future of the group at once. A request's 200 therefore waits for its own
record's fsync and nothing else.

A group commit is ONE row holding the whole group (a msgpack array of envelopes),
written by one autocommit INSERT: one SQLite step, so the writer thread releases and
retakes the GIL once per group instead of once per record — with the event loop busy
in the other thread, per-record GIL hand-offs made commits several times slower.
``seq`` numbers rows, so every entry of a group has the same seq, and the reader always
returns a row's entries together; positions are row seqs.

``seq`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``: SQLite then never reuses a number, even
after the loader has deleted every row, so a position stored in the lake stays valid.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import msgspec

from tdedge import metrics
from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal import envelope as wire
from tdedge.journal.base import Position
from tdedge.journal.envelope import Envelope, JournalEntry

log = logging.getLogger("tdedge.journal")

MAX_SHARDS = 64
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        received_ms INTEGER NOT NULL,  -- the oldest arrival in the group
        n INTEGER NOT NULL,            -- envelopes in the group
        envelopes BLOB NOT NULL        -- msgpack array of Envelope
    )
    """,
    # Covering index: backlog sums read it without touching the envelopes' pages.
    "CREATE INDEX IF NOT EXISTS journal_counts ON journal (seq, n, received_ms)",
)
# Deletes run while edge workers append to the same file: small chunks keep each
# write lock short, so an append never waits long behind a release.
_RELEASE_CHUNK = 2_000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def shard_path(journal_dir: Path, shard: str) -> Path:
    return journal_dir / f"{shard}.sqlite"


def claim_shard(journal_dir: Path) -> tuple[str, IO[bytes]]:
    """Lock the first free shard; the lock lives as long as the returned file."""
    journal_dir.mkdir(parents=True, exist_ok=True)
    for i in range(MAX_SHARDS):
        name = f"shard-{i:02d}"
        lock = (journal_dir / f"{name}.lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return name, lock
    raise JournalUnavailable(f"all {MAX_SHARDS} journal shards are in use")


_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]
_group_encoder = msgspec.msgpack.Encoder()
_group_decoder = msgspec.msgpack.Decoder(list[Envelope])


class SQLiteJournal:
    """The edge side of the embedded journal."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.shard, self._lock_file = claim_shard(settings.journal_dir)
        self._path = shard_path(settings.journal_dir, self.shard)
        self._conn = _connect(self._path)
        # Checkpoints copy the WAL into the database file and fsync it: work the
        # loader's release does (``release``), not the edge's commit path.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._cond = threading.Condition()
        self._queue: list[tuple[int, list[msgspec.Raw], _Waiter]] = []
        self._closed = False
        self._backlog = 0
        self._last_seq = 0
        self._refusal: str | None = None  # why appends are refused right now, if they are
        self._checked_at = float("-inf")
        self._check_health()
        self._thread = threading.Thread(target=self._run, name=f"journal-{self.shard}", daemon=True)
        self._thread.start()

    # Edge side.
    async def append(self, env: Envelope) -> None:
        await self.append_many((env,))

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        """All of ``envs`` in one group commit: durable together or not at all."""
        if self._refusal is not None:
            metrics.JOURNAL_REFUSED.labels(self._refusal).inc()
            raise JournalUnavailable(self._refusal)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        blobs = [msgspec.Raw(wire.encode(env)) for env in envs]
        received = min(env.received_ms for env in envs)
        with self._cond:
            if self._closed:
                raise JournalUnavailable("journal closed")
            self._queue.append((received, blobs, (loop, fut)))
            self._cond.notify()
        await fut

    def backlog(self) -> int:
        return self._backlog

    def writable(self) -> bool:
        return self._refusal is None and self._thread.is_alive()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self._conn.close()
        self._lock_file.close()

    # Writer thread.
    def _run(self) -> None:
        limit = self._settings.journal_commit_max
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(timeout=0.5)
                    if not self._queue:
                        break
                if self._closed and not self._queue:
                    return
                batch, self._queue = self._queue[:limit], self._queue[limit:]
            if batch:
                self._commit(batch)
            if self._clock() - self._checked_at >= 0.5:
                self._check_health()

    def _commit(self, batch: list[tuple[int, list[msgspec.Raw], _Waiter]]) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        blobs = [blob for _, request, _ in batch for blob in request]
        group = _group_encoder.encode(blobs)
        try:
            # Autocommit: the INSERT is its own transaction, fsynced before it returns.
            self._conn.execute(
                "INSERT INTO journal (received_ms, n, envelopes) VALUES (?, ?, ?)",
                (min(received for received, _, _ in batch), len(blobs), group),
            )
        except sqlite3.Error as e:
            log.error("journal commit failed", extra={"shard": self.shard, "error": str(e)})
            error = JournalUnavailable(f"journal write failed: {e}")
            self._refusal = "write_failed"
            self._checked_at = float("-inf")
        else:
            self._backlog += len(blobs)
            metrics.JOURNAL_APPENDED.inc(len(blobs))
            metrics.JOURNAL_COMMIT_BATCH.observe(len(blobs))
            metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        # One hop into each event loop per group, not one per request.
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, _, (loop, fut) in batch:
            by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            loop.call_soon_threadsafe(_settle, futs, error)

    def _check_health(self) -> None:
        self._checked_at = self._clock()
        s = self._settings
        try:
            (total,) = self._conn.execute("SELECT sum(n) FROM journal").fetchone()
            self._backlog = int(total or 0)
            free = _free_bytes(self._path.parent)
        except (sqlite3.Error, OSError) as e:
            self._refusal = "unhealthy"
            log.error("journal health check failed", extra={"error": str(e)})
            return
        metrics.JOURNAL_BACKLOG.labels(self.shard).set(self._backlog)
        if free < s.journal_min_free_bytes:
            self._refusal = "disk_full"
        elif self._backlog >= s.journal_max_backlog:
            self._refusal = "backlog_full"
        else:
            self._refusal = None


def _settle(futs: list[asyncio.Future[None]], error: Exception | None) -> None:
    for fut in futs:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class SQLiteJournalReader:
    """The loader side: reads every shard file in the journal folder."""

    def __init__(self, journal_dir: Path) -> None:
        self._dir = journal_dir
        self._conns: dict[str, sqlite3.Connection] = {}

    def _shards(self) -> dict[str, sqlite3.Connection]:
        if self._dir.exists():
            for path in sorted(self._dir.glob("shard-*.sqlite")):
                if path.stem not in self._conns:
                    self._conns[path.stem] = _connect(path)
        return self._conns

    def read(self, after: Position, limit: int) -> list[JournalEntry]:
        """About ``limit`` entries, shared among shards; whole groups only, so it may
        return up to one group more per shard."""
        shards = self._shards()
        if not shards:
            return []
        share = max(1, limit // len(shards))
        out: list[JournalEntry] = []
        for shard, conn in shards.items():
            pos, taken = after.get(shard, 0), 0
            while taken < share:
                rows = conn.execute(
                    "SELECT seq, envelopes FROM journal WHERE seq > ? ORDER BY seq LIMIT 64",
                    (pos,),
                ).fetchall()
                if not rows:
                    break
                for seq, blob in rows:
                    group = _group_decoder.decode(blob)
                    out.extend(JournalEntry(shard, seq, env) for env in group)
                    taken += len(group)
                    pos = seq
                    if taken >= share:
                        break
        return out

    def release(self, upto: Position) -> None:
        for shard, conn in self._shards().items():
            seq = upto.get(shard)
            if seq is None:
                continue
            while True:
                done = conn.execute(
                    "DELETE FROM journal WHERE seq IN "
                    "(SELECT seq FROM journal WHERE seq <= ? ORDER BY seq LIMIT ?)",
                    (seq, _RELEASE_CHUNK),
                ).rowcount
                if done < _RELEASE_CHUNK:
                    break
            # The edge never checkpoints (see SQLiteJournal): keep its WAL short here.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def pending(self, after: Position) -> tuple[int, int | None]:
        count, oldest = 0, None
        for shard, conn in self._shards().items():
            pos = after.get(shard, 0)
            n, first = conn.execute(
                "SELECT sum(n), min(received_ms) FROM journal WHERE seq > ?", (pos,)
            ).fetchone()
            if not n:
                continue
            count += int(n)
            if oldest is None or first < oldest:
                oldest = int(first)
        return count, oldest

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
