"""Batch facts: segment memberships and imported attribute values, by identity key.

Loaded from SQL over the lake (``refresh.py``) and read by the edge on every request,
through a small in-process cache: ``PRAGMA data_version`` (checked at most every
``CACHE_CHECK_MS``) tells when another process committed, and the cache is dropped. A
refresh is therefore seen within that time.

A separate SQLite file from the profiles: a refresh replaces a whole segment in one
transaction (readers keep seeing the old one until it commits, WAL), and its write lock
never holds up the profile writers.

On a shared control database the facts are computed once into it
(``batch_shared.py``) and each node copies them into this file (``install``), which
its edge reads as in the embedded case: no decision waits on the network.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from tdedge import wal
from tdedge.realtime import schema
from tdedge.realtime.errors import BatchStoreDown
from tdedge.realtime.service import Facts

SEGMENT = "segment"
ATTRIBUTE = "attribute"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS facts (
        service TEXT NOT NULL,
        key TEXT NOT NULL,          -- column=value, as in the profile store
        kind TEXT NOT NULL,         -- segment | attribute
        name TEXT NOT NULL,         -- segment id or attribute name
        value BLOB,                 -- attribute value, JSON; NULL for segments
        PRIMARY KEY (service, key, kind, name)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS facts_by_source ON facts (service, kind, name)",
    """CREATE TABLE IF NOT EXISTS sources (
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        sql TEXT NOT NULL,          -- the query that produced the facts
        refreshed_ms INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        error TEXT,                 -- the last attempt's error, if it failed
        PRIMARY KEY (service, kind, name)
    )""",
)
CACHE_CHECK_MS = 100
CACHE_MAX = 100_000
_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder().decode


def facts_of(rows: Iterable[Any]) -> Facts:
    """A key's facts from its rows (kind, name, value): the segments it is in, and each
    imported attribute's value (the first row of a name wins)."""
    segments: set[str] = set()
    imported: dict[str, Any] = {}
    for kind, name, value in rows:
        if kind == SEGMENT:
            segments.add(name)
        elif name not in imported:
            imported[name] = _decode(value)
    return Facts(segments, imported)


class SourceState(msgspec.Struct, frozen=True):
    service: str
    kind: str
    name: str
    sql: str
    refreshed_ms: int
    rows: int
    error: str | None
    # The shared store's: which node's refresher computed these facts.
    refreshed_by: str | None = None


class BatchStore(Protocol):
    """Where batch facts are kept: the data dir's SQLite file, or the shared control
    database. BatchStoreDown when it cannot be read or written."""

    def close(self) -> None: ...

    def cached_facts(self, service: str, keys: Sequence[str], now_ms: int) -> Facts: ...

    def facts(self, service: str, keys: Sequence[str]) -> Facts: ...

    def replace(
        self,
        service: str,
        kind: str,
        name: str,
        sql: str,
        rows: Iterable[tuple[str, Any]],
        now_ms: int,
    ) -> int: ...

    def failed(
        self, service: str, kind: str, name: str, sql: str, error: str, now_ms: int
    ) -> None: ...

    def sources(self) -> list[SourceState]: ...

    def forget(self, keep: set[tuple[str, str, str]]) -> None: ...


class SQLiteBatchStore:
    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=timeout_s
            )
            wal.enter(self._conn)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            schema.ensure(self._conn, _SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise BatchStoreDown(f"cannot open the batch store {path}: {e}") from e
        self._cache: dict[tuple[str, tuple[str, ...]], Facts] = {}
        self._version = -1
        self._checked_ms = -CACHE_CHECK_MS

    def close(self) -> None:
        self._conn.close()

    def cached_facts(self, service: str, keys: Sequence[str], now_ms: int) -> Facts:
        """``facts``, from the cache unless the store changed (seen within 100 ms)."""
        if now_ms - self._checked_ms >= CACHE_CHECK_MS:
            self._checked_ms = now_ms
            try:
                (version,) = self._conn.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as e:
                raise BatchStoreDown(f"batch store unavailable: {e}") from e
            if version != self._version:
                self._version = version
                self._cache.clear()
        key = (service, tuple(keys))
        found = self._cache.get(key)
        if found is None:
            found = self.facts(service, keys)
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found

    def facts(self, service: str, keys: Sequence[str]) -> Facts:
        """Segments and imported values of a profile with these keys."""
        if not keys:
            return Facts()
        try:
            rows = self._conn.execute(
                "SELECT kind, name, value FROM facts WHERE service = ? "
                f"AND key IN ({','.join('?' * len(keys))})",
                (service, *keys),
            ).fetchall()
        except sqlite3.Error as e:
            raise BatchStoreDown(f"batch store unavailable: {e}") from e
        return facts_of(rows)

    def replace(
        self,
        service: str,
        kind: str,
        name: str,
        sql: str,
        rows: Iterable[tuple[str, Any]],
        now_ms: int,
    ) -> int:
        """Swap a source's facts for ``rows`` (key, value) atomically; returns the count."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "DELETE FROM facts WHERE service = ? AND kind = ? AND name = ?",
                (service, kind, name),
            )
            cursor = conn.executemany(
                "INSERT OR REPLACE INTO facts (service, key, kind, name, value) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    (service, key, kind, name, None if kind == SEGMENT else _json.encode(value))
                    for key, value in rows
                ),
            )
            count = max(cursor.rowcount, 0)
            conn.execute(
                "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (service, kind, name, sql, now_ms, count),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise BatchStoreDown(f"batch store write failed: {e}") from e
        return count

    def install(self, state: SourceState, rows: Iterable[tuple[str, bytes | None]] | None) -> None:
        """A source as the shared store has it: its state, and its facts (encoded
        values) unless ``rows`` is None (only the state changed), in one transaction."""
        conn = self._conn
        where = (state.service, state.kind, state.name)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if rows is not None:
                conn.execute("DELETE FROM facts WHERE service = ? AND kind = ? AND name = ?", where)
                conn.executemany(
                    "INSERT OR REPLACE INTO facts (service, key, kind, name, value) "
                    "VALUES (?, ?, ?, ?, ?)",
                    ((state.service, key, state.kind, state.name, value) for key, value in rows),
                )
            conn.execute(
                "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*where, state.sql, state.refreshed_ms, state.rows, state.error),
            )
            conn.execute("COMMIT")
        except Exception as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise BatchStoreDown(f"batch store write failed: {e}") from e
            raise

    def failed(self, service: str, kind: str, name: str, sql: str, error: str, now_ms: int) -> None:
        """Record a failed refresh; the facts loaded before stay in force."""
        try:
            self._conn.execute(
                "INSERT INTO sources VALUES (?, ?, ?, ?, ?, 0, ?) "
                "ON CONFLICT (service, kind, name) DO UPDATE SET error = excluded.error, "
                "refreshed_ms = excluded.refreshed_ms",
                (service, kind, name, sql, now_ms, error[:2000]),
            )
        except sqlite3.Error as e:
            raise BatchStoreDown(f"batch store write failed: {e}") from e

    def sources(self) -> list[SourceState]:
        try:
            rows = self._conn.execute(
                "SELECT service, kind, name, sql, refreshed_ms, rows, error FROM sources "
                "ORDER BY service, kind, name"
            ).fetchall()
        except sqlite3.Error as e:
            raise BatchStoreDown(f"batch store unavailable: {e}") from e
        return [SourceState(*r) for r in rows]

    def forget(self, keep: set[tuple[str, str, str]]) -> None:
        """Drop the facts of sources no longer configured."""
        for s in self.sources():
            if (s.service, s.kind, s.name) not in keep:
                self._conn.execute(
                    "DELETE FROM facts WHERE service = ? AND kind = ? AND name = ?",
                    (s.service, s.kind, s.name),
                )
                self._conn.execute(
                    "DELETE FROM sources WHERE service = ? AND kind = ? AND name = ?",
                    (s.service, s.kind, s.name),
                )


def default_path(root: Path) -> Path:
    return root / "p13n" / "batch.sqlite"
