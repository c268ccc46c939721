"""The embedded journal: one SQLite file (WAL) per edge worker.

Each worker process owns a shard, claimed with an exclusive ``flock`` on its lock file,
so shards never share a writer and a restarted worker takes over a dead one's shard.

Appends are group-committed in two stages, so the event loop never waits on the disk
and the disk never waits on the event loop:

1. **write**, on the event loop: the first append of a loop iteration schedules one
   INSERT for every append of that iteration, after the requests it is handling. The
   connection runs ``synchronous=NORMAL``, so the INSERT only ``write()``s WAL frames.
2. **sync**, on the syncer thread: one ``fdatasync`` of the WAL file makes every frame
   written before it durable — what ``synchronous=FULL`` would do at each commit — and
   then resolves the futures of everything it covered, in one hop per event loop.
   While it runs the loop keeps writing, and the next fsync covers all of that.

A request's 200 therefore waits for an fsync that began after its own record was
written, and nothing else. SQLite keeps the ``-wal`` file while a connection is open,
so the descriptor the syncer holds is always the live WAL.

**Checkpoints** (which ``synchronous=NORMAL`` does fsync) are never on the commit path:
the checkpointer thread runs one whenever the syncer finds the WAL past
``WAL_CHECKPOINT_BYTES``, whether or not a loader runs or its commits succeed, and the
loader's release runs one too. Each group commit rewrites whole pages (the table's last
leaf, its index's, the AUTOINCREMENT counter's), so a WAL never checkpointed grows about
60 times faster than the records in it: a lake outage would fill the disk that much
sooner. Once checkpointed, the WAL starts over from its beginning and is cut back to
that size.

A group is ONE row holding its envelopes (a msgpack array), written by one autocommit
INSERT: one SQLite step per loop iteration rather than one per record. ``seq`` numbers
rows, so every entry of a group has the same seq, and the reader always returns a row's
entries together; positions are row seqs.

``seq`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``: SQLite then never reuses a number, even
after the loader has deleted every row, so a position stored in the lake stays valid.

**Staged entries** (``Staging``): a bulk import too large for one group is written part
by part into the ``parts`` table, where the loader does not look, each part a short
transaction of its own; then one small statement adds a journal row per part, pointing
at it (``journal.part``), with a full sync. The upload becomes visible to the loader
whole or not at all, and neither the edge nor the loader ever holds more than a part:
each pointer row is a group of its own, read and released like any other (a trigger
deletes the part with its row). Parts that were never published (the edge died, or the
upload was refused half-way) are deleted when a worker next claims the shard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import msgspec

from tdedge import metrics, wal
from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal import appends, slots
from tdedge.journal.base import Position
from tdedge.journal.envelope import Envelope, JournalGroup

log = logging.getLogger("tdedge.journal")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        received_ms INTEGER NOT NULL,  -- the oldest arrival in the group
        n INTEGER NOT NULL,            -- envelopes in the group
        envelopes BLOB NOT NULL,       -- msgpack array of Envelope (empty for a part)
        part INTEGER                   -- parts.id holding the envelopes, or NULL
    )
    """,
    # Covering index: backlog sums read it without touching the envelopes' pages.
    "CREATE INDEX IF NOT EXISTS journal_counts ON journal (seq, n, received_ms)",
    """
    CREATE TABLE IF NOT EXISTS parts (
        id INTEGER PRIMARY KEY,
        received_ms INTEGER NOT NULL,
        n INTEGER NOT NULL,
        envelopes BLOB NOT NULL
    )
    """,
)
# After the ``part`` column exists (files made before it get it in ``_connect``).
_PART_SCHEMA = (
    # Finds the parts no row points at (``_drop_unpublished``).
    "CREATE INDEX IF NOT EXISTS journal_parts ON journal (part) WHERE part IS NOT NULL",
    # A released row takes its part with it.
    """
    CREATE TRIGGER IF NOT EXISTS journal_release_part AFTER DELETE ON journal
    FOR EACH ROW WHEN old.part IS NOT NULL
    BEGIN DELETE FROM parts WHERE id = old.part; END
    """,
)
# Deletes run while edge workers append to the same file: small chunks keep each
# write lock short, so an append never waits long behind a release.
_RELEASE_CHUNK = 2_000
# The WAL size past which it is checkpointed, and what it is cut back to once reset:
# SQLite's own automatic checkpoint comes at about this size (1,000 pages).
WAL_CHECKPOINT_BYTES = 4 << 20


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    wal.enter(conn)
    # No connection here needs SQLite's own commit fsync: the edge's syncer fdatasyncs
    # the WAL before anyone is answered, and the loader's releases need none (below).
    # Checkpoints still sync, as synchronous=NORMAL always does.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_BYTES}")
    for statement in _SCHEMA:
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(journal)")}
    if "part" not in columns:
        try:
            conn.execute("ALTER TABLE journal ADD COLUMN part INTEGER")
        except sqlite3.OperationalError as e:
            if "duplicate column" not in str(e):  # another process added it first
                raise
    for statement in _PART_SCHEMA:
        conn.execute(statement)
    return conn


def shard_path(journal_dir: Path, shard: str) -> Path:
    return journal_dir / f"{shard}.sqlite"


def claim_shard(journal_dir: Path) -> tuple[str, IO[bytes]]:
    """Lock the first free shard; the lock lives as long as the returned file."""
    i, lock = slots.claim(journal_dir, "shard")
    return f"shard-{i:02d}", lock


def continue_after(journal_dir: Path, positions: Mapping[str, int]) -> None:
    """Make each shard number its next rows after ``positions[shard]``.

    For a restored data dir: the lake may have loaded a shard's entries past the last
    row of the copied journal (they arrived after the copy), and the loader reads only
    rows after the lake's position, so a row numbered at or below it would be skipped.
    """
    journal_dir.mkdir(parents=True, exist_ok=True)
    for shard, seq in positions.items():
        if not _SHARD_NAME.fullmatch(shard):
            raise ValueError(f"not a journal shard name: {shard!r}")
        conn = _connect(shard_path(journal_dir, shard))
        try:
            conn.execute("BEGIN IMMEDIATE")
            found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'")
            row = found.fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('journal', ?)", (seq,)
                )
            elif int(row[0]) < seq:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'journal'", (seq,))
            conn.execute("COMMIT")
        finally:
            conn.close()


_SHARD_NAME = re.compile(r"shard-[0-9]{2}")


_group_encoder = msgspec.msgpack.Encoder()
_group_decoder = msgspec.msgpack.Decoder(list[Envelope])
# Futures waiting for the next fsync, by the event loop that resolves them.
_Written = dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]]


class SQLiteJournal:
    """The edge side of the embedded journal."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.shard, self._lock_file = claim_shard(settings.journal_dir)
        self._path = shard_path(settings.journal_dir, self.shard)
        self._conn = _connect(self._path)
        _drop_unpublished(self._conn)
        # Checkpoints copy the WAL into the database file and fsync it: the
        # checkpointer's work (``_checkpoint_when_due``), never the commit path's.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._wal_fd = -1  # opened after the first write, once SQLite has made the file
        # Appended on the event loop, written by ``_write`` once per loop iteration.
        self._pending: list[Envelope] = []
        self._pending_received = 0
        self._pending_futs: _Written = {}
        # Written to the WAL, waiting for the syncer thread's fdatasync.
        self._cond = threading.Condition()
        self._written: _Written = {}
        self._written_n = 0
        self._closed = False
        self._backlog = 0
        self._refusal: str | None = None  # why appends are refused right now, if they are
        self._checked_at = float("-inf")
        self._health_conn = _connect(self._path)
        self._check_health()
        self._thread = threading.Thread(target=self._run, name=f"journal-{self.shard}", daemon=True)
        self._thread.start()
        self._checkpoint_due = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_when_due, name=f"journal-checkpoint-{self.shard}", daemon=True
        )
        self._checkpointer.start()

    # Edge side (the event loop's thread).
    async def append(self, env: Envelope) -> None:
        await self.append_many((env,))

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        """All of ``envs`` in one group commit: durable together or not at all."""
        if self._refusal is not None:
            metrics.JOURNAL_REFUSED.labels(self._refusal).inc()
            raise JournalUnavailable(self._refusal)
        if self._closed:
            raise JournalUnavailable("journal closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        received = min(env.received_ms for env in envs)
        if not self._pending:
            # The first append of this loop iteration schedules the write; every
            # request the iteration handles joins it.
            loop.call_soon(self._write)
            self._pending_received = received
        elif received < self._pending_received:
            self._pending_received = received
        self._pending.extend(envs)
        self._pending_futs.setdefault(loop, []).append(fut)
        await fut

    def stage(self) -> SQLiteStaging:
        """Somewhere to write one large upload part by part, then publish it whole."""
        return SQLiteStaging(self._path, self._refused)

    def _refused(self) -> str | None:
        return "journal closed" if self._closed else self._refusal

    def _write(self) -> None:
        """Write what this iteration appended to the WAL (no fsync: the syncer's job)."""
        envs, self._pending = self._pending, []
        futs, self._pending_futs = self._pending_futs, {}
        try:
            # Autocommit with synchronous=NORMAL: the INSERT is its own transaction,
            # written to the WAL but not yet synced, so the event loop never waits on
            # the disk. Nobody is answered before the syncer's fdatasync covers it.
            self._conn.execute(
                "INSERT INTO journal (received_ms, n, envelopes) VALUES (?, ?, ?)",
                # The group is a msgpack array of envelopes: encoded in one call.
                (self._pending_received, len(envs), _group_encoder.encode(envs)),
            )
            if self._wal_fd < 0:
                self._wal_fd = os.open(f"{self._path}-wal", os.O_RDONLY)
        except Exception as e:  # whatever it is, the requests it carried get a 503
            self._failed(e)
            error = JournalUnavailable(f"journal write failed: {e}")
            for loop, group in futs.items():
                loop.call_soon_threadsafe(appends.settle, group, error)
            return
        with self._cond:
            for loop, group in futs.items():
                self._written.setdefault(loop, []).extend(group)
            self._written_n += len(envs)
            self._cond.notify()

    def _failed(self, e: Exception) -> None:
        log.error("journal commit failed", extra={"shard": self.shard, "error": str(e)})
        self._refusal = "write_failed"
        self._checked_at = float("-inf")

    def backlog(self) -> int:
        return self._backlog

    def writable(self) -> bool:
        return self._refusal is None and self._thread.is_alive()

    def state(self) -> str:
        return "local"  # a 200 follows the fdatasync of this node's file

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self._checkpoint_due.set()
        self._checkpointer.join(timeout=30)
        if self._wal_fd >= 0:
            os.close(self._wal_fd)
            self._wal_fd = -1  # closing twice must not close a descriptor reused since
        self._conn.close()
        self._health_conn.close()
        self._lock_file.close()

    # Syncer thread: one fdatasync makes every write before it durable, so while one
    # runs the event loop keeps writing, and the next fsync covers all of it.
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._written_n and not self._closed:
                    self._cond.wait(timeout=0.5)
                    if not self._written_n:
                        break
                if self._closed and not self._written_n:
                    return
                written, self._written = self._written, {}
                n, self._written_n = self._written_n, 0
            if n:
                self._sync(written, n)
                self._check_wal()
            if self._clock() - self._checked_at >= 0.5:
                self._check_health()

    def _sync(self, written: _Written, n: int) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        try:
            os.fdatasync(self._wal_fd)
        except OSError as e:
            self._failed(e)
            error = JournalUnavailable(f"journal sync failed: {e}")
        else:
            self._backlog += n
            metrics.JOURNAL_APPENDED.inc(n)
            metrics.JOURNAL_COMMIT_BATCH.observe(n)
            metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        # One hop into each event loop per fsync, not one per request.
        for loop, futs in written.items():
            loop.call_soon_threadsafe(appends.settle, futs, error)

    def _check_wal(self) -> None:
        try:
            size = os.fstat(self._wal_fd).st_size
        except OSError:
            return  # the sync that just failed says it already
        if size > WAL_CHECKPOINT_BYTES:
            self._checkpoint_due.set()

    # Checkpointer thread, with a connection of its own: a checkpoint copies pages and
    # fsyncs the database file, and the syncer's fsyncs of the WAL go on meanwhile.
    def _checkpoint_when_due(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closed:
                    return
                try:
                    if conn is None:
                        conn = _connect(self._path)
                    # PASSIVE: it never waits for the edge's writes, nor they for it.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as e:
                    log.warning(
                        "journal checkpoint failed", extra={"shard": self.shard, "error": str(e)}
                    )
                    time.sleep(1.0)  # the syncer asks at every fsync: not a log line each
        finally:
            if conn is not None:
                conn.close()

    def _check_health(self) -> None:
        self._checked_at = self._clock()
        s = self._settings
        try:
            (total,) = self._health_conn.execute("SELECT sum(n) FROM journal").fetchone()
            self._backlog = int(total or 0)
            free = appends.free_bytes(self._path.parent)
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


class SQLiteStaging:
    """One upload's parts, invisible to the loader until ``publish`` (module docstring).

    Every method blocks on the disk: call them from a worker thread. Each ``add`` is a
    short transaction of its own, so the event loop's group commits, which wait for
    SQLite's write lock, never wait long behind an upload.
    """

    def __init__(self, path: Path, refused: Callable[[], str | None]) -> None:
        self._conn = _connect(path)
        self._refused = refused
        self._ids: list[int] = []
        self.records = 0

    def add(self, envs: Sequence[Envelope]) -> None:
        """Write one part; raise JournalUnavailable while the journal refuses appends."""
        refusal = self._refused()
        if refusal is not None:
            metrics.JOURNAL_REFUSED.labels(refusal).inc()
            raise JournalUnavailable(refusal)
        try:
            cursor = self._conn.execute(
                "INSERT INTO parts (received_ms, n, envelopes) VALUES (?, ?, ?)",
                (min(env.received_ms for env in envs), len(envs), _group_encoder.encode(envs)),
            )
        except sqlite3.Error as e:
            raise JournalUnavailable(f"journal write failed: {e}") from e
        self._ids.append(int(cursor.lastrowid or 0))
        self.records += len(envs)

    def publish(self) -> None:
        """Make every part visible to the loader at once; durable when this returns."""
        refusal = self._refused()
        if refusal is not None:
            metrics.JOURNAL_REFUSED.labels(refusal).inc()
            raise JournalUnavailable(refusal)
        started = time.perf_counter()
        try:
            # One transaction: a row per part, in the parts' order, or none. FULL makes
            # its commit fsync the WAL, which holds the parts too.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            added = self._conn.execute(
                "INSERT INTO journal (received_ms, n, envelopes, part) "
                "SELECT p.received_ms, p.n, x'', p.id FROM json_each(?) AS j "
                "JOIN parts AS p ON p.id = j.value ORDER BY j.key",
                (_ids_json(self._ids),),
            ).rowcount
            if added != len(self._ids):
                # Parts deleted under it: the worker shut down and another claimed the
                # shard while this upload was still being written.
                self._conn.execute("ROLLBACK")
                raise JournalUnavailable("the upload's parts are gone; send it again")
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise JournalUnavailable(f"journal write failed: {e}") from e
        self._ids = []  # the journal's now: released with their rows
        metrics.JOURNAL_APPENDED.inc(self.records)
        metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        self._conn.close()

    def discard(self) -> None:
        """Delete what was written (a refused or abandoned upload); safe to call twice."""
        try:
            if self._ids:
                self._conn.execute(
                    "DELETE FROM parts WHERE id IN (SELECT value FROM json_each(?))",
                    (_ids_json(self._ids),),
                )
                self._ids = []
        except sqlite3.Error as e:
            # Left behind, they are deleted when a worker next claims the shard.
            log.warning("could not delete an unpublished upload's parts", extra={"error": str(e)})
        finally:
            self._conn.close()


def _ids_json(ids: list[int]) -> str:
    # Text: newer SQLite reads a BLOB handed to json_each as its binary JSONB.
    return msgspec.json.encode(ids).decode()


def _drop_unpublished(conn: sqlite3.Connection) -> None:
    """Delete parts no journal row points at: uploads a dead worker never published.

    Runs when a worker claims the shard, so no other writer is staging into it.
    """
    gone = conn.execute(
        "DELETE FROM parts WHERE NOT EXISTS (SELECT 1 FROM journal WHERE journal.part = parts.id)"
    ).rowcount
    if gone:
        log.info("deleted unpublished upload parts", extra={"parts": gone})


class SQLiteJournalReader:
    """The loader side: reads every shard file in the journal folder."""

    def __init__(self, journal_dir: Path) -> None:
        self._dir = journal_dir
        self._conns: dict[str, sqlite3.Connection] = {}

    def _shards(self) -> dict[str, sqlite3.Connection]:
        # os.listdir, not Path.glob: this runs at every poll, and glob costs ~10 times more.
        try:
            names = sorted(os.listdir(self._dir))
        except FileNotFoundError:
            names = []
        for name in names:
            shard, _, suffix = name.partition(".")
            if not shard.startswith("shard-") or suffix != "sqlite" or shard in self._conns:
                continue
            # Deletes need no fsync of their own: the position they follow is stored in
            # the lake, so a release a power cut undoes is simply done again. Without
            # one, a release holds the shard's write lock for microseconds, not an
            # fsync, and the edge's writes on the event loop never wait behind it.
            conn = _connect(self._dir / name)
            # This SQLite is built with secure_delete on: every page a release frees
            # would be zeroed and written again (~45 ms of CPU per 100k envelopes, most
            # of a release). FAST zeroes deleted cells only where that costs no extra I/O
            # (~7 ms).
            conn.execute("PRAGMA secure_delete=FAST")
            self._conns[shard] = conn
        return self._conns

    def read(self, after: Position, limit: int, max_bytes: int | None = None) -> list[JournalGroup]:
        """About ``limit`` envelopes and ``max_bytes`` of encoded groups, shared among
        shards; whole groups only, so it may return up to one group more per shard."""
        shards = self._shards()
        if not shards:
            return []
        share = max(1, limit // len(shards))
        byte_share = None if max_bytes is None else max(1, max_bytes // len(shards))
        out: list[JournalGroup] = []
        for shard, conn in shards.items():
            taken = size = 0
            # Rows are stepped one at a time and the statement is dropped as soon as the
            # share is reached: one row holds a whole loop iteration of the edge (up to
            # thousands of envelopes), so fetching a fixed number of rows read megabytes
            # only to throw most of them away (~8 ms for a 2,000-envelope batch).
            cursor = conn.execute(
                "SELECT j.seq, coalesce(p.envelopes, j.envelopes) FROM journal AS j "
                "LEFT JOIN parts AS p ON p.id = j.part WHERE j.seq > ? ORDER BY j.seq",
                (after.get(shard, 0),),
            )
            try:
                for seq, blob in cursor:
                    group = _group_decoder.decode(blob)
                    out.append(JournalGroup(shard, seq, group))
                    taken += len(group)
                    size += len(blob)
                    if taken >= share or (byte_share is not None and size >= byte_share):
                        break
            finally:
                cursor.close()
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
            # The deletes grow the WAL too, and a shard no edge worker writes any more
            # has no checkpointer of its own (see SQLiteJournal).
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


def unreleased(journal_dir: Path) -> tuple[int, int | None]:
    """(records in the shard files no loader has released yet, arrival ms of the oldest
    of them), read without writing anything: for the operator's views when no loader
    runs to say it. Raises sqlite3.Error when a file cannot be read."""
    try:
        names = sorted(os.listdir(journal_dir))
    except FileNotFoundError:
        names = []
    count, oldest = 0, None
    for name in names:
        shard, _, suffix = name.partition(".")
        if not shard.startswith("shard-") or suffix != "sqlite":
            continue
        uri = f"{(journal_dir / name).resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            n, first = conn.execute("SELECT sum(n), min(received_ms) FROM journal").fetchone()
        finally:
            conn.close()
        if n:
            count += int(n)
            oldest = int(first) if oldest is None else min(oldest, int(first))
    return count, oldest
