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


class Journal(Protocol):
    """The edge side: append and wait until durable."""

    async def append(self, env: Envelope) -> None:
        """Return once ``env`` is durable; raise JournalUnavailable otherwise."""
        ...

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        """Like append, for several envelopes durable together (one request's events)."""
        ...

    def backlog(self) -> int:
        """Records appended and not yet released by the loader (approximate)."""
        ...

    def writable(self) -> bool: ...

    def close(self) -> None: ...


class JournalReader(Protocol):
    """The loader side: read past a position, release what is loaded."""

    def read(self, after: Position, limit: int) -> list[JournalGroup]:
        """Groups with seq > after[shard] (0 when absent), oldest first per shard: about
        ``limit`` envelopes in all, whole groups only."""
        ...

    def release(self, upto: Position) -> None:
        """Entries at or before ``upto`` are in the lake and may be discarded."""
        ...

    def pending(self, after: Position) -> tuple[int, int | None]:
        """(records not yet loaded, arrival ms of the oldest of them or None)."""
        ...

    def close(self) -> None: ...
