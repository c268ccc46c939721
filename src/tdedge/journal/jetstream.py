"""The replicated journal: a NATS JetStream stream shared by every node.

**The stream.** One stream (``Settings.journal_stream``, created if absent with
``journal_replicas`` replicas, file storage and a ``journal_duplicate_window_s``
duplicate window), split into ``journal_partitions`` subjects. Each edge process
publishes to one partition; the loader keeps a position per partition (its shard name,
``<stream>.pNN``), the stream sequence of the last group it loaded, committed in the
same lake transaction as the rows, as with the SQLite journal.

**Groups.** As the SQLite journal shares one fsync among the appends written while the
last one ran, this journal shares one publish: each process has at most ``_IN_FLIGHT``
messages out to the stream, and the appends that arrive meanwhile go into the next one
(a msgpack array of envelopes, up to ``journal_max_message_bytes``). Each
message carries a ``Nats-Msg-Id`` unique to it, so a publish retried after a timeout is
stored once however often it is sent.

**What a 200 means.** JetStream acknowledges a publish once a quorum of the replicas
(two of three) has it in its file store. When a node that leads the stream dies, the
others take seconds to elect a new leader and no publish is acknowledged meanwhile. A
group whose ack does not come within ``journal_publish_timeout_s`` is written to this
node's local outbox instead (a SQLite file in the data dir, fsynced), and the request is
answered then. So the 200 means, in each state (``state()``, the ``/readyz`` detail and
the ``tdedge_journal_local`` metric):

- ``replicated``: on a quorum of the stream's replicas;
- ``local``: on this node's disk (fsynced), to be forwarded. A forwarder thread sends
  the outbox's groups to the stream with their first message ids, oldest first, and
  while the outbox holds any, new groups go to it directly (no request waits for a
  timeout twice); once it is empty and the stream answers again, appends publish
  directly again;
- refused (503 + Retry-After): the outbox's oldest group has waited longer than
  ``journal_local_max_age_s``, the disk is full, or the stream's backlog is over its
  bound. Never a 200 that is not durable.

**Large uploads** (``stage``) are written part by part to the outbox file, where nobody
reads them; ``publish`` sends each part to a subject of its own and then one pointer
message on the partition naming the parts' sequences: the loader sees the upload whole
or not at all. Uploads need the stream: while it is unreachable they are refused (503).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from tdedge import metrics, wal
from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal import appends, slots
from tdedge.journal.base import Position
from tdedge.journal.envelope import Envelope, JournalGroup

log = logging.getLogger("tdedge.journal")

T = TypeVar("T")

# What a message holds, for an operator reading the stream with NATS's own tools: the
# loader reads the counts and arrival times from the envelopes themselves.
_COUNT = "Tdedge-Count"
_RECEIVED = "Tdedge-Received"
_PARTS = "Tdedge-Parts"
_CHUNKS = "Tdedge-Chunks"
_MSG_ID = "Nats-Msg-Id"
# Room left in a message for its headers.
_HEADER_ROOM = 1024
# Messages one process has out to the stream at once (see ``_enqueue``).
_IN_FLIGHT = 2
# What an envelope costs in a message besides its record (its other fields, encoded).
_ENVELOPE_ROOM = 128
# Whatever a publish or request can raise when the stream cannot answer in time.
_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)

_group_encoder = msgspec.msgpack.Encoder()
_group_decoder = msgspec.msgpack.Decoder(list[Envelope])


def servers(url: str) -> list[str]:
    """``nats://h1:4222,nats://h2:4222`` → each server's URL."""
    return [part.strip() for part in url.split(",") if part.strip()]


def is_nats_url(url: str) -> bool:
    found = servers(url)
    return bool(found) and all(s.startswith(("nats://", "tls://")) for s in found)


def _check_url(settings: Settings) -> None:
    """Refuse at start what no NATS client can reach (it would retry it for ever)."""
    if not is_nats_url(settings.journal):
        raise JournalUnavailable(
            f"journal: {settings.journal!r} is not nats://host:4222[,nats://host:4222...]"
        )


def _subject_root(stream: str) -> str:
    return f"tdedge.{stream.lower()}"


def partition_subject(stream: str, partition: int) -> str:
    return f"{_subject_root(stream)}.p{partition:02d}"


def shard_name(stream: str, partition: int) -> str:
    return f"{stream}.p{partition:02d}"


def _parts_subject(stream: str, upload: str) -> str:
    return f"{_subject_root(stream)}.parts.{upload}"


class _Loop:
    """An event loop on a thread of its own, where the NATS client lives.

    The edge's requests run on whichever loop serves them (and the tests run each
    append on a fresh one), the loader and the staging calls are synchronous: one loop
    that outlives them all keeps the client's connection, pings and reconnects alive.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.submit(coro).result(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()


async def _connect(settings: Settings, name: str) -> tuple[NATS, JetStreamContext]:
    """A client on the servers of ``settings.journal``, and the stream made if absent."""
    # Bounded: with reconnects allowed, the client would try the servers forever.
    nc = await asyncio.wait_for(
        nats.connect(
            servers=servers(settings.journal),
            name=name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            error_cb=_connection_error,
            disconnected_cb=_disconnected,
            reconnected_cb=_reconnected,
        ),
        timeout=settings.journal_connect_timeout_s,
    )
    js = nc.jetstream(timeout=10)
    try:
        await js.stream_info(settings.journal_stream)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(
            name=settings.journal_stream,
            subjects=[f"{_subject_root(settings.journal_stream)}.>"],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            storage=StorageType.FILE,
            num_replicas=settings.journal_replicas,
            duplicate_window=settings.journal_duplicate_window_s,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # Another process created it between our look and our add.
            await js.stream_info(settings.journal_stream)
    return nc, js


# The client reports each failed attempt to reach a server; the journal's own state
# (``state()``, its metrics and log lines) says what matters to an operator.
async def _connection_error(e: Exception) -> None:
    log.debug("journal: NATS connection error", extra={"error": repr(e)})


async def _disconnected() -> None:
    log.info("journal: disconnected from NATS")


async def _reconnected() -> None:
    log.info("journal: reconnected to NATS")


@dataclass
class _Message:
    """One group on its way to the stream (or to the outbox)."""

    msg_id: str
    subject: str
    received_ms: int
    n: int
    payload: bytes
    rowid: int = 0  # its row in the outbox, once there

    def headers(self) -> dict[str, str]:
        return {_MSG_ID: self.msg_id, _COUNT: str(self.n), _RECEIVED: str(self.received_ms)}


class _Outbox:
    """This process's local first hop: groups JetStream did not acknowledge in time,
    fsynced here until the forwarder has them in the stream. One file per edge process,
    claimed with ``flock`` (as the SQLite journal's shards), so a restarted process
    forwards what a dead one left."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.slot, self._lock_file = slots.claim(folder, "outbox")
        self.path = folder / f"outbox-{self.slot:02d}.sqlite"
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        wal.enter(self._conn)
        # FULL: a commit fsyncs the WAL, which is what a 200 in the local state means.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "msg_id TEXT NOT NULL, subject TEXT NOT NULL, received_ms INTEGER NOT NULL, "
            "n INTEGER NOT NULL, payload BLOB NOT NULL, stored_at REAL NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS parts (id INTEGER PRIMARY KEY, "
            "upload TEXT NOT NULL, received_ms INTEGER NOT NULL, n INTEGER NOT NULL, "
            "envelopes BLOB NOT NULL)"
        )
        # Parts of an upload a dead process never published: nobody will.
        self._conn.execute("DELETE FROM parts")
        self._lock = threading.Lock()
        self.records, self.oldest = self._measure()

    def _measure(self) -> tuple[int, float | None]:
        n, oldest = self._conn.execute("SELECT sum(n), min(stored_at) FROM outbox").fetchone()
        return int(n or 0), (None if oldest is None else float(oldest))

    def put(self, messages: Sequence[_Message]) -> None:
        """Durable when this returns (one fsync for all of ``messages``)."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for m in messages:
                    cursor = self._conn.execute(
                        "INSERT INTO outbox (msg_id, subject, received_ms, n, payload, "
                        "stored_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (m.msg_id, m.subject, m.received_ms, m.n, m.payload, now),
                    )
                    m.rowid = int(cursor.lastrowid or 0)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self.records += sum(m.n for m in messages)
            if self.oldest is None:
                self.oldest = now

    def oldest_rows(self, limit: int) -> list[_Message]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT msg_id, subject, received_ms, n, payload, id FROM outbox "
                "ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [_Message(*row) for row in rows]

    def forwarded(self, messages: Sequence[_Message]) -> None:
        """The stream has them: forget them. (A delete a crash undoes is forwarded
        again, and the stream's duplicate window drops the second copy.)"""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "DELETE FROM outbox WHERE id = ?", [(m.rowid,) for m in messages]
            )
            self._conn.execute("COMMIT")
            self.records, self.oldest = self._measure()

    def add_part(self, upload: str, envs: Sequence[Envelope]) -> int:
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO parts (upload, received_ms, n, envelopes) VALUES (?, ?, ?, ?)",
                (upload, min(e.received_ms for e in envs), len(envs), _group_encoder.encode(envs)),
            )
            return int(cursor.lastrowid or 0)

    def parts(self, ids: Sequence[int]) -> list[tuple[int, int, bytes]]:
        with self._lock:
            return [
                self._conn.execute(
                    "SELECT received_ms, n, envelopes FROM parts WHERE id = ?", (i,)
                ).fetchone()
                for i in ids
            ]

    def drop_parts(self, upload: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM parts WHERE upload = ?", (upload,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self._lock_file.close()


@dataclass
class _Request:
    envs: Sequence[Envelope]
    fut: asyncio.Future[None]
    size: int


@dataclass
class _Group:
    """One caller loop iteration's records, on their way to the journal's loop."""

    envs: list[Envelope]
    futs: list[asyncio.Future[None]]
    loop: asyncio.AbstractEventLoop
    size: int


@dataclass
class _Batch:
    requests: list[_Request] = field(default_factory=list)
    size: int = 0


class JetStreamJournal:
    """The edge side of the replicated journal (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        _check_url(settings)
        self._settings = settings
        self._outbox = _Outbox(settings.journal_dir / "nats-outbox")
        self.partition = self._outbox.slot % settings.journal_partitions
        self.shard = shard_name(settings.journal_stream, self.partition)
        self._subject = partition_subject(settings.journal_stream, self.partition)
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:16]
        self._io = _Loop(f"journal-{self.shard}")
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        # "replicated" or "local": where appends go first (module docstring).
        self._state = "local" if self._outbox.records else "replicated"
        self._refusal: str | None = None
        self._stream_groups = 0
        self._recent: list[int] = []  # sequences acked since the last health check
        self._closed = False
        self._pending: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        # Groups waiting for the outbox's next fsync (the journal's own loop).
        self._local_queue: list[tuple[_Message, asyncio.Future[None]]] = []
        self._local_writing = False
        self._outgoing: deque[_Group] = deque()
        self._in_flight = 0
        try:
            # Connected before the first request, so that it publishes; a stream out of
            # reach now is the forwarder's to wait for, while the outbox takes appends.
            self._nc, self._js = self._io.run(
                _connect(settings, self.shard), timeout=settings.journal_connect_timeout_s
            )
        except (*_NATS_ERRORS, concurrent.futures.TimeoutError) as e:
            log.warning("journal: the stream is out of reach at start", extra={"error": repr(e)})
            self._state = "local"
        self._forwarder = self._io.submit(self._forward())
        self._publish_state()

    # The caller's event loop.
    async def append(self, env: Envelope) -> None:
        await self.append_many((env,))

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        """All of ``envs`` durable together (module docstring for where), or raise."""
        refusal = self._refused()
        if refusal is not None:
            metrics.JOURNAL_REFUSED.labels(refusal).inc()
            raise JournalUnavailable(refusal)
        loop = asyncio.get_running_loop()
        pending = self._pending.setdefault(loop, [])
        if not pending:
            # The first append of this loop iteration schedules the publish; every
            # request the iteration handles joins it.
            loop.call_soon(self._flush, loop)
        # More than one message can hold is cut into pieces, in order, each a group.
        futs: list[asyncio.Future[None]] = []
        limit = self._settings.journal_max_message_bytes - _HEADER_ROOM
        piece: list[Envelope] = []
        size = 0
        for e in envs:
            cost = len(e.record) + _ENVELOPE_ROOM
            if piece and size + cost > limit:
                futs.append(loop.create_future())
                pending.append(_Request(piece, futs[-1], size))
                piece, size = [], 0
            piece.append(e)
            size += cost
        futs.append(loop.create_future())
        pending.append(_Request(piece, futs[-1], size))
        if len(futs) == 1:
            await futs[0]
        else:
            await asyncio.gather(*futs)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        requests = self._pending.pop(loop, [])
        limit = self._settings.journal_max_message_bytes - _HEADER_ROOM
        batches: list[_Batch] = [_Batch()]
        for r in requests:
            if batches[-1].requests and batches[-1].size + r.size > limit:
                batches.append(_Batch())
            batches[-1].requests.append(r)
            batches[-1].size += r.size
        for batch in batches:
            group = _Group(
                [e for r in batch.requests for e in r.envs],
                [r.fut for r in batch.requests],
                loop,
                batch.size,
            )
            self._io.loop.call_soon_threadsafe(self._enqueue, group)

    # The journal's own loop: groups from every caller's loop, published at most
    # _IN_FLIGHT messages at a time; what queues meanwhile shares the next message, as
    # what is written during an fsync shares the next one in the SQLite journal.
    def _enqueue(self, group: _Group) -> None:
        self._outgoing.append(group)
        if self._in_flight < _IN_FLIGHT:
            self._in_flight += 1
            self._io.loop.create_task(self._send_queued())

    async def _send_queued(self) -> None:
        limit = self._settings.journal_max_message_bytes - _HEADER_ROOM
        try:
            while self._outgoing:
                taken = [self._outgoing.popleft()]
                size = taken[0].size
                while self._outgoing and size + self._outgoing[0].size <= limit:
                    size += self._outgoing[0].size
                    taken.append(self._outgoing.popleft())
                envs = [e for g in taken for e in g.envs]
                message = _Message(
                    f"{self._id_prefix}-{next(self._ids)}",
                    self._subject,
                    min(e.received_ms for e in envs),
                    len(envs),
                    _group_encoder.encode(envs),
                )
                error: BaseException | None = None
                try:
                    await self._store(message)
                except Exception as e:
                    error = e
                for g in taken:
                    # A closed loop (RuntimeError): nobody waits for these any more.
                    with contextlib.suppress(RuntimeError):
                        g.loop.call_soon_threadsafe(appends.settle, g.futs, error)
        finally:
            self._in_flight -= 1

    def stage(self) -> JetStreamStaging:
        return JetStreamStaging(self)

    def backlog(self) -> int:
        """Groups in the stream (every node's, not yet released) and records in this
        process's outbox."""
        return self._stream_groups + self._outbox.records

    def writable(self) -> bool:
        return self._refused() is None and self._io.alive() and not self._forwarder.done()

    def state(self) -> str:
        """Where a 200 puts records now: ``replicated`` or ``local`` (module docstring)."""
        return self._state

    def _refused(self) -> str | None:
        return "journal closed" if self._closed else self._refusal

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(
            concurrent.futures.TimeoutError, concurrent.futures.CancelledError
        ):
            self._forwarder.result(timeout=10)
        if self._js is not None and self._outbox.records:
            # A last try, bounded: what the stream takes now waits for no restart.
            with contextlib.suppress(Exception):
                self._io.run(self._drain(), timeout=self._settings.journal_drain_s)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                self._io.run(self._nc.close(), timeout=10)
        self._io.stop()
        self._outbox.close()

    # The journal's own loop.
    async def _drain(self) -> None:
        while await self._forward_some():
            pass

    async def _store(self, message: _Message) -> None:
        """Publish ``message``; failing an ack in time, fsync it to the outbox."""
        refusal = self._refused()
        if refusal is not None:
            raise JournalUnavailable(refusal)
        started = time.perf_counter()
        if self._state == "replicated" and self._js is not None:
            try:
                ack = await self._publish(
                    self._js, message, self._settings.journal_publish_timeout_s
                )
            except _NATS_ERRORS as e:
                self._go_local(f"publish not acknowledged: {e!r}")
            else:
                self._acked(ack.seq)
                self._appended(message.n, started)
                return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._local_queue.append((message, fut))
        if len(self._local_queue) == 1 and not self._local_writing:
            asyncio.get_running_loop().create_task(self._write_local())
        await fut
        self._appended(message.n, started)

    async def _write_local(self) -> None:
        """Group commit into the outbox: whatever queued while the last fsync ran goes
        in the next one, as the SQLite journal does."""
        self._local_writing = True
        try:
            while self._local_queue:
                taken, self._local_queue = self._local_queue, []
                error: BaseException | None = None
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        None, self._put_local, [m for m, _ in taken]
                    )
                except BaseException as e:
                    error = e
                for _, fut in taken:
                    if fut.done():
                        continue
                    if error is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(error)
        finally:
            self._local_writing = False

    def _put_local(self, messages: list[_Message]) -> None:
        refusal = self._local_refusal()
        if refusal is not None:
            metrics.JOURNAL_REFUSED.labels(refusal).inc(len(messages))
            raise JournalUnavailable(refusal)
        try:
            self._outbox.put(messages)
        except sqlite3.Error as e:
            raise JournalUnavailable(f"journal write failed: {e}") from e
        self._publish_state()

    def _local_refusal(self) -> str | None:
        oldest = self._outbox.oldest
        if oldest is not None and time.time() - oldest > self._settings.journal_local_max_age_s:
            return "stream_unreachable"
        if appends.free_bytes(self._outbox.path.parent) < self._settings.journal_min_free_bytes:
            return "disk_full"
        return None

    def _acked(self, seq: int) -> None:
        self._recent.append(seq)
        self._stream_groups += 1

    def _appended(self, n: int, started: float) -> None:
        metrics.JOURNAL_APPENDED.inc(n)
        metrics.JOURNAL_COMMIT_BATCH.observe(n)
        metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)

    def _go_local(self, why: str) -> None:
        if self._state != "local":
            log.warning(
                "journal: the stream did not answer; appends go to the outbox", extra={"error": why}
            )
            self._state = "local"
            self._publish_state()

    def _publish_state(self) -> None:
        metrics.JOURNAL_LOCAL.set(1 if self._state == "local" else 0)
        metrics.JOURNAL_OUTBOX.set(self._outbox.records)

    async def _forward(self) -> None:
        """Connect, forward the outbox, watch the stream's health: until closed."""
        checked = float("-inf")
        while not self._closed:
            try:
                if self._js is None:
                    self._nc, self._js = await _connect(self._settings, self.shard)
                moved = await self._forward_some()
                if time.monotonic() - checked >= 0.5:
                    checked = time.monotonic()
                    await self._check_health()
                if not moved:
                    await asyncio.sleep(0.05)
            except _NATS_ERRORS as e:
                self._go_local(repr(e))
                self._update_refusal()
                await asyncio.sleep(0.25)
            except Exception:
                log.exception("journal forwarder failed; trying again")
                await asyncio.sleep(0.5)

    async def _forward_some(self) -> bool:
        """Send the outbox's oldest groups with their first ids; True if any were sent."""
        assert self._js is not None
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, self._outbox.oldest_rows, 256)
        if not rows:
            if self._state == "local":
                # Only once the stream's leader answers again.
                await self._js.stream_info(self._settings.journal_stream)
                self._back()
            return False
        # Pipelined, each with its first id: a group the stream has already is
        # acknowledged as a duplicate and stored once.
        timeout = max(self._settings.journal_publish_timeout_s, 2.0)
        js = self._js
        acks = await asyncio.gather(
            *(self._publish(js, m, timeout) for m in rows),
            return_exceptions=True,
        )
        sent = [m for m, ack in zip(rows, acks, strict=True) if not isinstance(ack, BaseException)]
        for ack in acks:
            if not isinstance(ack, BaseException):
                self._acked(ack.seq)
        if sent:
            await loop.run_in_executor(None, self._outbox.forwarded, sent)
        self._publish_state()
        failed = next((a for a in acks if isinstance(a, BaseException)), None)
        if failed is not None:
            raise failed
        # The stream takes groups again: new ones publish directly while the rest of
        # the outbox is forwarded beside them.
        self._back()
        return True

    async def _publish(self, js: JetStreamContext, m: _Message, wait_s: float) -> PubAck:
        """One group, one message; a group over the server's message size (one record
        as large as a request may be) goes in chunks to a subject of its own, then one
        pointer message names them. Every piece has an id of its own derived from the
        group's, so sending the whole again stores each piece once."""
        assert self._nc is not None
        room = max(1024, int(self._nc.max_payload) - _HEADER_ROOM)
        if len(m.payload) <= room:
            return await js.publish(m.subject, m.payload, timeout=wait_s, headers=m.headers())
        subject = _parts_subject(self._settings.journal_stream, m.msg_id)
        seqs = []
        for i in range(0, len(m.payload), room):
            ack = await js.publish(
                subject,
                m.payload[i : i + room],
                timeout=wait_s,
                headers={_MSG_ID: f"{m.msg_id}-c{i // room}"},
            )
            seqs.append(str(ack.seq))
        headers = {**m.headers(), _CHUNKS: f"{m.msg_id} {','.join(seqs)}"}
        return await js.publish(m.subject, b"", timeout=wait_s, headers=headers)

    def _back(self) -> None:
        if self._state == "local":
            self._state = "replicated"
            log.info("journal: the stream answers again; appends publish directly")
            self._publish_state()

    async def _check_health(self) -> None:
        assert self._js is not None
        info = await self._js.stream_info(self._settings.journal_stream)
        # The count answers for the stream up to its last sequence; this process's
        # groups acknowledged past it (while the question was out) come on top.
        last = int(info.state.last_seq)
        self._recent = [seq for seq in self._recent if seq > last]
        self._stream_groups = int(info.state.messages) + len(self._recent)
        metrics.JOURNAL_BACKLOG.labels(self.shard).set(self.backlog())
        self._update_refusal()

    def _update_refusal(self) -> None:
        if self.backlog() >= self._settings.journal_max_backlog:
            self._refusal = "backlog_full"
        else:
            self._refusal = self._local_refusal() if self._state == "local" else None


class JetStreamStaging:
    """One upload's parts: kept in the outbox file until ``publish`` (module docstring).

    Every method blocks: call them from a worker thread.
    """

    def __init__(self, journal: JetStreamJournal) -> None:
        self._journal = journal
        self._upload = uuid.uuid4().hex
        self._ids: list[int] = []
        self.records = 0
        self._sent = False

    def add(self, envs: Sequence[Envelope]) -> None:
        refusal = self._journal._refused()
        if refusal is not None:
            metrics.JOURNAL_REFUSED.labels(refusal).inc()
            raise JournalUnavailable(refusal)
        try:
            self._ids.append(self._journal._outbox.add_part(self._upload, envs))
        except sqlite3.Error as e:
            raise JournalUnavailable(f"journal write failed: {e}") from e
        self.records += len(envs)

    def publish(self) -> None:
        j = self._journal
        refusal = j._refused()
        if refusal is not None:
            metrics.JOURNAL_REFUSED.labels(refusal).inc()
            raise JournalUnavailable(refusal)
        started = time.perf_counter()
        try:
            j._io.run(self._send(), timeout=j._settings.journal_local_max_age_s)
        except (*_NATS_ERRORS, concurrent.futures.TimeoutError) as e:
            raise JournalUnavailable(f"the stream did not take the upload: {e!r}") from e
        j._outbox.drop_parts(self._upload)
        metrics.JOURNAL_APPENDED.inc(self.records)
        metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)

    async def _send(self) -> None:
        j = self._journal
        js = j._js
        if js is None or j.state() != "replicated":
            raise JournalUnavailable("the stream is unreachable: uploads wait for it")
        self._sent = True
        subject = _parts_subject(j._settings.journal_stream, self._upload)
        loop = asyncio.get_running_loop()
        seqs: list[str] = []
        received = None
        timeout = max(j._settings.journal_publish_timeout_s, 5.0)
        for i, part_id in enumerate(self._ids):
            ((part_received, n, blob),) = await loop.run_in_executor(
                None, j._outbox.parts, [part_id]
            )
            received = part_received if received is None else min(received, part_received)
            ack = await _retrying(
                lambda blob=blob, n=n, i=i: js.publish(  # type: ignore[misc]
                    subject,
                    blob,
                    timeout=timeout,
                    headers={_MSG_ID: f"{self._upload}-{i}", _COUNT: str(n)},
                )
            )
            seqs.append(str(ack.seq))
        pointer = {
            _MSG_ID: f"{self._upload}-pointer",
            _COUNT: str(self.records),
            _RECEIVED: str(received or 0),
            _PARTS: f"{self._upload} {','.join(seqs)}",
        }
        await _retrying(lambda: js.publish(j._subject, b"", timeout=timeout, headers=pointer))

    def discard(self) -> None:
        j = self._journal
        with contextlib.suppress(sqlite3.Error):
            j._outbox.drop_parts(self._upload)
        if self._sent and j._js is not None:
            # Parts sent without their pointer: nobody reads them; purge them.
            js = j._js
            subject = _parts_subject(j._settings.journal_stream, self._upload)
            with contextlib.suppress(Exception):
                j._io.run(js.purge_stream(j._settings.journal_stream, subject=subject), 10)


async def _retrying(send: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    """A publish with its message id, tried again after a timeout (stored at most once)."""
    for attempt in range(attempts):
        try:
            return await send()
        except _NATS_ERRORS:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


@dataclass
class _Partition:
    """The loader's reading of one partition: a consumer from some sequence on."""

    sub: JetStreamContext.PullSubscription
    upto: int  # the last sequence returned to the loader (or the one before the start)
    buffer: deque[JournalGroup] = field(default_factory=deque)


class JetStreamJournalReader:
    """The loader side: the partitions this loader holds the lease of, each read
    through a pull consumer.

    **Leases.** Loaders on any node may read the stream; each partition is read by one
    of them at a time, the holder of its key in the ``<stream>_LOADERS`` key-value
    bucket (one key per partition, the holder's id as value). A loader takes a free key
    with a create (which fails if the key exists) and renews its keys every quarter of
    ``journal_lease_ttl_s`` with an update conditioned on the revision it holds (a
    compare-and-set); the bucket's TTL makes a dead loader's keys vanish, and the next
    round of any other loader takes them. Renewals run on the reader's own thread, so a
    long lake commit does not lose them. A loader that closes deletes its keys.
    """

    def __init__(self, settings: Settings) -> None:
        _check_url(settings)
        self._settings = settings
        self._stream = settings.journal_stream
        self._io = _Loop("journal-reader")
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._partitions: dict[int, _Partition] = {}
        # Uploads a pointer (by shard and sequence) names: purged with it on release.
        self._uploads: dict[tuple[str, int], str] = {}
        self._closed = False
        self._id = uuid.uuid4().hex.encode()
        self._kv: KeyValue | None = None
        self._owned: dict[int, int] = {}  # partition → the revision of our lease key
        self._renewed = time.monotonic()
        self._renewer: asyncio.Task[None] | None = None
        self._busy: set[int] = set()  # partitions read past what was committed
        self._reading = False

    def owned(self) -> list[str]:
        """The shards (partitions) this loader holds the lease of."""
        return [shard_name(self._stream, p) for p in sorted(self._owned)]

    def _shards(self) -> dict[str, int]:
        return {shard_name(self._stream, p): p for p in sorted(self._owned)}

    async def _renew(self) -> None:
        """One round: say this loader lives, renew the keys held, take free ones up to
        a fair share of the partitions, and free those held beyond it (once what was
        read from them is committed), for the loaders that started since."""
        assert self._kv is not None
        ttl = self._settings.journal_lease_ttl_s
        partitions = self._settings.journal_partitions
        try:
            await self._kv.put(f"m-{self._id.decode()}", b"1")
            try:
                keys = [k for k in await self._kv.keys() if k.startswith("m-")]
            except nats.js.errors.NoKeysError:
                keys = []
            fair = -(-partitions // max(1, len(keys)))
            # From the last: the first partitions, which the first process of every
            # node publishes to, stay with the loader that has them.
            for p in reversed(range(partitions)):
                key = f"p{p:02d}"
                try:
                    if p in self._owned:
                        if len(self._owned) > fair and self._idle(p):
                            await self._kv.delete(key, last=self._owned[p])
                            log.info(
                                "journal: a partition freed for another loader",
                                extra={"shard": key},
                            )
                            await self._lose(p)
                            continue
                        self._owned[p] = await self._kv.update(key, self._id, last=self._owned[p])
                    elif len(self._owned) < fair:
                        self._owned[p] = await self._kv.create(key, self._id)
                        log.info("journal: this loader took a partition", extra={"shard": key})
                except nats.js.errors.KeyWrongLastSequenceError:
                    # Another loader holds it (or took it over from us).
                    if p in self._owned:
                        log.warning("journal: a partition's lease was lost", extra={"shard": key})
                        await self._lose(p)
        except _NATS_ERRORS as e:
            if time.monotonic() - self._renewed > ttl / 2:
                # Not renewed for long: another loader may take them any moment.
                log.warning("journal: leases not renewed", extra={"error": repr(e)})
                for q in list(self._owned):
                    await self._lose(q)
            return
        self._renewed = time.monotonic()

    def _idle(self, p: int) -> bool:
        """Whether nothing read from partition ``p`` waits to be committed (so another
        loader taking it over reads on from the position this one committed)."""
        return not self._reading and p not in self._busy

    def _settled(self, after: Position) -> None:
        """The loader asks again from ``after``: what it committed. A partition read
        past it still has a batch on its way to the lake."""
        for p, part in self._partitions.items():
            if after.get(shard_name(self._stream, p), 0) >= part.upto:
                self._busy.discard(p)
            else:
                self._busy.add(p)

    async def _lose(self, p: int) -> None:
        self._owned.pop(p, None)
        part = self._partitions.pop(p, None)
        if part is not None:
            await self._drop(part)

    async def _renew_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._settings.journal_lease_ttl_s / 4)
            try:
                await self._renew()
            except Exception:
                log.exception("journal: lease renewal failed")

    async def _leases(self, js: JetStreamContext) -> KeyValue:
        bucket = f"{self._stream}_LOADERS"
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=self._settings.journal_lease_ttl_s,
                    replicas=self._settings.journal_replicas,
                    storage=StorageType.FILE,
                )
            )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._io.run(coro, timeout=60)
        except (*_NATS_ERRORS, concurrent.futures.TimeoutError) as e:
            # Whatever state the consumers were in, start them again next time.
            self._partitions.clear()
            raise JournalUnavailable(f"the journal stream did not answer: {e!r}") from e

    async def _client(self) -> JetStreamContext:
        if self._js is None:
            self._nc, self._js = await _connect(self._settings, "tdedge-loader")
        if self._kv is None:
            self._kv = await self._leases(self._js)
            await self._renew()
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return self._js

    async def _at(self, p: int, after: int) -> _Partition:
        """Partition ``p``'s reading, positioned just after ``after``."""
        js = await self._client()
        part = self._partitions.get(p)
        if part is not None and part.upto == after:
            return part
        if part is not None:
            await self._drop(part)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=60.0,
        )
        sub = await js.pull_subscribe(
            partition_subject(self._stream, p), stream=self._stream, config=config
        )
        part = _Partition(sub, after)
        self._partitions[p] = part
        return part

    async def _drop(self, part: _Partition) -> None:
        with contextlib.suppress(Exception):
            await part.sub.unsubscribe()

    def read(self, after: Position, limit: int, max_bytes: int | None = None) -> list[JournalGroup]:
        return self._run(self._read(after, limit, max_bytes))

    async def _read(self, after: Position, limit: int, max_bytes: int | None) -> list[JournalGroup]:
        await self._client()  # the leases first: they say which partitions to read
        self._settled(after)
        self._reading = True
        try:
            groups = await self._read_owned(after, limit, max_bytes)
        finally:
            self._reading = False
        self._settled(after)
        return groups

    async def _read_owned(
        self, after: Position, limit: int, max_bytes: int | None
    ) -> list[JournalGroup]:
        # The limits are shared among the partitions that have something to read.
        active: list[tuple[str, _Partition, int]] = []
        for shard, p in self._shards().items():
            part = await self._at(p, after.get(shard, 0))
            waiting = 0 if part.buffer else await self._waiting(part)
            if part.buffer or waiting:
                active.append((shard, part, waiting))
        if not active:
            return []
        share = max(1, limit // len(active))
        byte_share = None if max_bytes is None else max(1, max_bytes // len(active))
        out: list[JournalGroup] = []
        for shard, part, waiting in active:
            taken = size = 0
            while taken < share and (byte_share is None or size < byte_share):
                if not part.buffer:
                    # Counted down as fetched: the consumer is asked again only once
                    # what it last said was waiting has all come.
                    waiting = waiting or await self._waiting(part)
                    fetched = await self._fill(shard, part, share - taken, waiting)
                    if not fetched:
                        break
                    waiting = max(0, waiting - fetched)
                group = part.buffer.popleft()
                out.append(group)
                part.upto = group.seq
                taken += len(group.envelopes)
                size += sum(len(e.record) for e in group.envelopes)
        return out

    async def _waiting(self, part: _Partition) -> int:
        """Messages on the partition past what its consumer delivered."""
        return int((await part.sub.consumer_info()).num_pending or 0)

    async def _fill(self, shard: str, part: _Partition, wanted: int, waiting: int) -> int:
        """Fetch up to ``wanted`` of the ``waiting`` messages into the buffer; how many
        came (0 if none is there)."""
        # Only when the consumer said some are waiting: a fetch from a consumer with
        # nothing to deliver waits out its timeout (and on an empty pull answers 503 at
        # times), where asking is one short request.
        if not waiting:
            return 0
        try:
            msgs = await part.sub.fetch(max(1, min(wanted, waiting, 256)), timeout=2.0)
        except (TimeoutError, nats.errors.TimeoutError):
            return 0
        for msg in msgs:
            part.buffer.append(await self._group(shard, msg))
        return len(msgs)

    async def _group(self, shard: str, msg: Msg) -> JournalGroup:
        seq = msg.metadata.sequence.stream
        headers = msg.headers or {}
        parts, chunks = headers.get(_PARTS), headers.get(_CHUNKS)
        if parts is None and chunks is None:
            return JournalGroup(shard, seq, _group_decoder.decode(msg.data))
        upload, _, seqs = (parts or chunks or "").partition(" ")
        js = await self._client()
        pieces = [await js.get_msg(self._stream, seq=int(s)) for s in seqs.split(",")]
        self._uploads[(shard, seq)] = upload
        if chunks is not None:  # one group cut in pieces of bytes
            return JournalGroup(
                shard, seq, _group_decoder.decode(b"".join(p.data or b"" for p in pieces))
            )
        envs: list[Envelope] = []
        for piece in pieces:  # an upload's parts, each a group of its own
            envs.extend(_group_decoder.decode(piece.data or b""))
        return JournalGroup(shard, seq, envs)

    def release(self, upto: Position) -> None:
        self._run(self._release(upto))

    async def _release(self, upto: Position) -> None:
        js = await self._client()
        for shard, p in self._shards().items():
            seq = upto.get(shard)
            if seq is None:
                continue
            # Everything on the partition before seq + 1: this one and all earlier.
            await js.purge_stream(
                self._stream, subject=partition_subject(self._stream, p), seq=seq + 1
            )
            for key in [k for k in self._uploads if k[0] == shard and k[1] <= seq]:
                upload = self._uploads.pop(key)
                await js.purge_stream(self._stream, subject=_parts_subject(self._stream, upload))

    def pending(self, after: Position) -> tuple[int, int | None]:
        """(groups not yet loaded, arrival ms of the oldest of them or None): JetStream
        counts messages, so this counts groups, not records, but those already read."""
        return self._run(self._pending(after))

    async def _pending(self, after: Position) -> tuple[int, int | None]:
        await self._client()
        self._settled(after)
        # Reading: the buffers fill below, and a partition is not handed over meanwhile.
        self._reading = True
        try:
            count, oldest = 0, None
            for shard, p in self._shards().items():
                part = await self._at(p, after.get(shard, 0))
                waiting = await self._waiting(part)
                # The oldest arrival is in the oldest message: fetched into the buffer,
                # where the next read takes it, rather than fetched twice. The loader
                # asks at every poll while a batch gathers, and it stays there.
                if not part.buffer and waiting:
                    waiting -= await self._fill(shard, part, 1, waiting)
                count += waiting + sum(len(g.envelopes) for g in part.buffer)
                if part.buffer:
                    first = min(e.received_ms for e in part.buffer[0].envelopes)
                    oldest = first if oldest is None else min(oldest, first)
        finally:
            self._reading = False
        return count, oldest

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def shut() -> None:
            if self._renewer is not None:
                self._renewer.cancel()
            for part in self._partitions.values():
                await self._drop(part)
            if self._kv is not None:
                # Free at once for the other loaders, not at the TTL.
                for p, revision in self._owned.items():
                    with contextlib.suppress(Exception):
                        await self._kv.delete(f"p{p:02d}", last=revision)
                with contextlib.suppress(Exception):
                    await self._kv.delete(f"m-{self._id.decode()}")
            if self._nc is not None:
                await self._nc.close()

        with contextlib.suppress(Exception):
            self._io.run(shut(), timeout=10)
        self._io.stop()
