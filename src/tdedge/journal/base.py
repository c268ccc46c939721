"""The journal protocols: what the edge appends to and what the loader reads from.

Two implementations are planned: embedded SQLite files (``sqlite.py``) and NATS
JetStream. A position is a mapping shard → last consumed seq; the loader stores it in
the same lake transaction as the rows it loaded, so it never needs the journal to
remember consumers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from tdedge.journal.envelope import Envelope, JournalGroup

Position = Mapping[str, int]


class Staging(Protocol):
    """An upload too large for one group: written part by part, then published whole.

    Each method blocks on the disk (call them from a worker thread) and raises
    JournalUnavailable when the journal cannot take the records.
    """

    records: int  # envelopes added so far

    def add(self, envs: Sequence[Envelope]) -> None:
        """Write one part; the loader cannot see it yet."""
        ...

    def publish(self) -> None:
        """Make every part visible to the loader at once; durable when this returns."""
        ...

    def discard(self) -> None:
        """Forget the parts written (the upload was refused or abandoned)."""
        ...


class Journal(Protocol):
    """The edge side: append and wait until durable."""

    shard: str  # this writer's own part of the journal, for logs

    async def append(self, env: Envelope) -> None:
        """Return once ``env`` is durable; raise JournalUnavailable otherwise."""
        ...

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        """Like append, for several envelopes durable together (one request's events)."""
        ...

    def stage(self) -> Staging:
        """Somewhere to write one upload larger than a group should be (Staging)."""
        ...

    def backlog(self) -> int:
        """Records appended and not yet released by the loader (approximate)."""
        ...

    def writable(self) -> bool: ...

    def state(self) -> str:
        """Where a 200 puts records now: ``local`` (fsynced on this node's disk) or
        ``replicated`` (on a quorum of a replicated journal's copies)."""
        ...

    def close(self) -> None: ...


class JournalReader(Protocol):
    """The loader side: read past a position, release what is loaded."""

    def read(self, after: Position, limit: int, max_bytes: int | None = None) -> list[JournalGroup]:
        """Groups with seq > after[shard] (0 when absent), oldest first per shard: about
        ``limit`` envelopes and ``max_bytes`` of encoded groups in all, whole groups only
        (at least one, however large)."""
        ...

    def release(self, upto: Position) -> None:
        """Entries at or before ``upto`` are in the lake and may be discarded."""
        ...

    def pending(self, after: Position) -> tuple[int, int | None]:
        """(records not yet loaded, arrival ms of the oldest of them or None)."""
        ...

    def close(self) -> None: ...
