"""The embedded profile store: one SQLite file in WAL mode shared by every worker.

Atomicity across worker processes: each group of works runs in ONE ``BEGIN IMMEDIATE``
transaction, which takes SQLite's write lock, so read-modify-write of a profile is
serialised with every other writer. Before that, writers queue on an ``flock`` of a
lock file: SQLite's own busy handler sleeps 1, 2, 5, 10… ms between attempts, while a
blocked flock wakes the moment the holder lets go — the difference is the p99.

Durability: ``synchronous=NORMAL`` — a commit is not fsynced. The event that caused
an update is already fsynced in the journal before the profile is touched (the door
appends first), so a power loss can lose the last profile updates but never an event;
a process crash (kill -9) loses nothing, because the WAL is in the OS's hands. Profiles
are a derived view of the stored events, like a cache that can be rebuilt.

Layout: ``profiles`` (one msgpack blob per profile), ``profile_keys`` (service, key →
profile id, the identity index), ``merges`` (the merge log).
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TypeVar

import msgspec

from tdedge.realtime import profile as profiles
from tdedge.realtime.errors import ProfileStoreDown
from tdedge.realtime.identity import plan
from tdedge.realtime.profile import MAX_KEYS, Profile
from tdedge.realtime.store import Merge, Resolution, Work

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS profiles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: merge log ids stay unique
        service TEXT NOT NULL,
        state BLOB NOT NULL                    -- msgpack Profile
    )""",
    """CREATE TABLE IF NOT EXISTS profile_keys (
        service TEXT NOT NULL,
        key TEXT NOT NULL,                     -- column=value
        profile_id INTEGER NOT NULL,
        PRIMARY KEY (service, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS profile_keys_by_profile ON profile_keys (profile_id)",
    """CREATE TABLE IF NOT EXISTS merges (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms INTEGER NOT NULL,
        service TEXT NOT NULL,
        survivor INTEGER NOT NULL,
        merged INTEGER NOT NULL,
        keys TEXT NOT NULL                     -- JSON array of the keys that moved
    )""",
    "CREATE INDEX IF NOT EXISTS merges_by_survivor ON merges (survivor)",
)
# Lock waits poll this often at first, backing off to _LOCK_POLL_MAX_S.
_LOCK_POLL_S = 0.00005
_LOCK_POLL_MAX_S = 0.002
_json = msgspec.json.Encoder()
_keys_decoder = msgspec.json.Decoder(list[str])


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class _Tx:
    """The ProfileTx of one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def resolve(self, service: str, keys: Sequence[str], now_ms: int) -> Resolution:
        conn = self._conn
        rows = conn.execute(
            "SELECT k.key, k.profile_id, p.state FROM profile_keys k "
            "JOIN profiles p ON p.id = k.profile_id "
            f"WHERE k.service = ? AND k.key IN ({_placeholders(len(keys))})",
            (service, *keys),
        ).fetchall()
        found = {key: pid for key, pid, _ in rows}
        states = {pid: state for _, pid, state in rows}
        stitch = plan(keys, found)
        if stitch.survivor is None:
            (pid,) = conn.execute(
                "INSERT INTO profiles (service, state) VALUES (?, x'') RETURNING id", (service,)
            ).fetchone()
            profile = Profile(id=pid, created_ms=now_ms, updated_ms=now_ms)
            self._add_keys(service, profile, stitch.new_keys)
            return Resolution(profile, True, [])
        profile = profiles.decode(states[stitch.survivor])
        for other_id in stitch.merged:
            other = profiles.decode(states[other_id])
            profiles.merge(profile, other)
            conn.execute(
                "UPDATE profile_keys SET profile_id = ? WHERE profile_id = ?",
                (profile.id, other_id),
            )
            conn.execute("DELETE FROM profiles WHERE id = ?", (other_id,))
            conn.execute(
                "INSERT INTO merges (time_ms, service, survivor, merged, keys) "
                "VALUES (?, ?, ?, ?, ?)",
                (now_ms, service, profile.id, other_id, _json.encode(other.keys).decode()),
            )
        self._add_keys(service, profile, stitch.new_keys)
        return Resolution(profile, False, stitch.merged)

    def _add_keys(self, service: str, profile: Profile, keys: list[str]) -> None:
        room = MAX_KEYS - len(profile.keys)
        added = keys[: max(0, room)]
        if added:
            self._conn.executemany(
                "INSERT INTO profile_keys (service, key, profile_id) VALUES (?, ?, ?)",
                [(service, k, profile.id) for k in added],
            )
            profile.keys.extend(added)

    def save(self, service: str, profile: Profile) -> None:
        self._conn.execute(
            "UPDATE profiles SET state = ? WHERE id = ?", (profiles.encode(profile), profile.id)
        )


class SQLiteProfileStore:
    def __init__(self, path: Path, timeout_s: float = 2.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._timeout_s = timeout_s
        self._lock: IO[bytes] = path.with_suffix(".lock").open("ab")
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=timeout_s
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except sqlite3.Error as e:
            raise ProfileStoreDown(f"cannot open the profile store {path}: {e}") from e

    def set_timeout(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")

    def close(self) -> None:
        self._conn.close()
        self._lock.close()

    # Writes.
    def run(self, works: Sequence[Work[T]]) -> list[T | Exception]:
        if not works:
            return []
        self._acquire()
        try:
            return self._run_locked(works)
        finally:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)

    def _acquire(self) -> None:
        fd = self._lock.fileno()
        deadline = time.monotonic() + self._timeout_s
        pause = _LOCK_POLL_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ProfileStoreDown(
                        f"profile store busy for more than {self._timeout_s:g}s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, _LOCK_POLL_MAX_S)

    def _run_locked(self, works: Sequence[Work[T]]) -> list[T | Exception]:
        """Run every work in one transaction. Optimistic: no savepoint per work (two
        statements each); if one raises, the whole transaction rolls back and the
        others run again without it — works are pure functions of the stored state."""
        conn = self._conn
        tx = _Tx(conn)
        out: list[T | Exception] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        failed: tuple[int, Exception] | None = None
        try:
            for at, work in enumerate(works):
                try:
                    out.append(work(tx))
                except sqlite3.Error:
                    raise
                except Exception as e:
                    failed = (at, e)
                    break
            if failed is None:
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            _rollback(conn)
            raise ProfileStoreDown(f"profile store write failed: {e}") from e
        except BaseException:
            _rollback(conn)
            raise
        if failed is None:
            return out
        at, error = failed
        rest = [*works[:at], *works[at + 1 :]]
        again = self._run_locked(rest) if rest else []
        return [*again[:at], error, *again[at:]]

    # Reads.
    def find(self, service: str, keys: Sequence[str]) -> list[Profile]:
        if not keys:
            return []
        try:
            rows = self._conn.execute(
                "SELECT DISTINCT p.id, p.state FROM profile_keys k "
                "JOIN profiles p ON p.id = k.profile_id "
                f"WHERE k.service = ? AND k.key IN ({_placeholders(len(keys))}) ORDER BY p.id",
                (service, *keys),
            ).fetchall()
        except sqlite3.Error as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        return [profiles.decode(state) for _, state in rows]

    def merges(self, service: str, profile_id: int | None = None, limit: int = 100) -> list[Merge]:
        sql = "SELECT seq, time_ms, service, survivor, merged, keys FROM merges WHERE service = ?"
        args: list[object] = [service]
        if profile_id is not None:
            sql += " AND survivor = ?"
            args.append(profile_id)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        try:
            rows = self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        return [Merge(r[0], r[1], r[2], r[3], r[4], _keys_decoder.decode(r[5])) for r in rows]

    def count(self, service: str) -> int:
        (n,) = self._conn.execute(
            "SELECT count(*) FROM profiles WHERE service = ?", (service,)
        ).fetchone()
        return int(n)

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, writers)."""
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _rollback(conn: sqlite3.Connection) -> None:
    # Nothing may be open: a failed statement can end the transaction by itself.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def default_path(root: Path) -> Path:
    return root / "p13n" / "profiles.sqlite"
