"""The embedded profile store: one SQLite file in WAL mode shared by every worker.

Atomicity across worker processes: each group of works runs in ONE ``BEGIN IMMEDIATE``
transaction, which takes SQLite's write lock, so read-modify-write of a profile is
serialised with every other writer. Before that, writers queue on an ``flock`` of a
lock file: SQLite's own busy handler sleeps 1, 2, 5, 10… ms between attempts, while a
blocked flock wakes the moment the holder lets go — the difference is the p99.

A group costs a handful of statements, not a few per profile: the profiles of every
key of the group are read in one statement (one row of JSON, decoded by msgspec
straight into Profile structs), the works run in memory, and the changes are written
back in one multi-row statement per table. Profiles this connection committed stay
decoded in a ``ProfileCache`` while ``PRAGMA data_version`` (read inside the write
transaction) shows no other connection has committed since, so with one writer a
known person costs no read at all. Each SQLite step releases the GIL, and with
the event loop and the journal's thread waiting for it, every release is a hand-off
(the journal module says the same of its inserts).

Durability: ``synchronous=NORMAL`` — a commit is not fsynced. The event that caused
an update is already fsynced in the journal before the profile is touched (the door
appends first), so a power loss can lose the last profile updates but never an event;
a process crash (kill -9) loses nothing, because the WAL is in the OS's hands. Profiles
are a derived view of the stored events, like a cache that can be rebuilt.

Layout: ``profiles`` (one JSON Profile per row), ``profile_keys`` (service, key →
profile id, the identity index), ``profile_ids`` (the id sequence: ids only grow, so
the older of two profiles has the lower id), ``merges`` (the merge log).
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import msgspec

from tdedge import wal
from tdedge.realtime import profile as profiles
from tdedge.realtime import schema
from tdedge.realtime.cache import ProfileCache
from tdedge.realtime.errors import ProfileStoreDown
from tdedge.realtime.profile import Profile
from tdedge.realtime.staging import StagedTx
from tdedge.realtime.store import Merge, Work

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS profiles (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        state TEXT NOT NULL                    -- Profile as JSON
    )""",
    """CREATE TABLE IF NOT EXISTS profile_keys (
        service TEXT NOT NULL,
        key TEXT NOT NULL,                     -- column=value
        profile_id INTEGER NOT NULL,
        PRIMARY KEY (service, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS profile_keys_by_profile ON profile_keys (profile_id)",
    """CREATE TABLE IF NOT EXISTS profile_ids (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        next INTEGER NOT NULL                  -- the next id to hand out
    )""",
    "INSERT OR IGNORE INTO profile_ids VALUES (1, 1)",
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
# One statement reads the keys' profile ids and their profiles, as one row of JSON.
_READ = (
    "WITH found AS (SELECT key, profile_id FROM profile_keys "
    "WHERE service = ? AND key IN ({marks})) "
    "SELECT (SELECT json_group_array(json_array(key, profile_id)) FROM found), "
    "(SELECT '[' || group_concat(state, ',') || ']' FROM profiles "
    "WHERE id IN (SELECT profile_id FROM found))"
)
# The WAL is copied into the database by the loader process's refresher thread
# (``checkpoint``, every 0.1 s): a checkpoint fsyncs, which no request should wait for.
# Past this many pages (40 MiB; e.g. with --no-loader) a writer checkpoints after all.
_AUTOCHECKPOINT_PAGES = 10_000
# A WAL this long is started over by the next checkpoint (``checkpoint``): ~3 s of
# frames at 2,000 decisions/s, well before a writer would checkpoint by itself.
_START_OVER_FRAMES = 6_000
# Rows per multi-row statement: well under SQLite's 32,766 bound on parameters.
_CHUNK = 500
# Lock waits poll this often at first, backing off to _LOCK_POLL_MAX_S.
_LOCK_POLL_S = 0.00005
_LOCK_POLL_MAX_S = 0.002
_json = msgspec.json.Encoder()
_keys_decoder = msgspec.json.Decoder(list[str])
_found_decoder = msgspec.json.Decoder(list[tuple[str, int]])
_profiles_decoder = msgspec.json.Decoder(list[Profile])
_profile_decoder = msgspec.json.Decoder(Profile)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(rows: list[Any]) -> list[list[Any]]:
    if len(rows) <= _CHUNK:
        return [rows] if rows else []
    return [rows[i : i + _CHUNK] for i in range(0, len(rows), _CHUNK)]


class _GroupTx(StagedTx):
    """The ProfileTx of one group: reads up front, works in memory, writes at the end."""

    def __init__(self, conn: sqlite3.Connection, size: int, cache: ProfileCache) -> None:
        super().__init__(size)
        self._conn = conn
        self._cache = cache
        self._looked_up: set[tuple[str, str]] = set()
        self._new_keys: list[tuple[str, str]] = []
        self._moved: list[tuple[int, int]] = []  # stored profile merged → survivor
        self._merges: list[tuple[int, str, int, int, str]] = []

    def prefetch(self, service: str, keys: Sequence[str]) -> None:
        todo: list[str] = []
        looked_up, cache = self._looked_up, self._cache
        for key in keys:
            if (service, key) in looked_up:
                continue
            cached = cache.get(service, key)
            if cached is None:
                todo.append(key)
                continue
            looked_up.add((service, key))
            pid, profile = cached
            self._ids.setdefault((service, key), pid)
            if pid not in self._profiles and pid not in self._gone:
                self._profiles[pid] = profile
                self._stored.add(pid)
                self._services[pid] = service
        for part in _chunks(list(dict.fromkeys(todo))):
            found_json, states_json = self._conn.execute(
                _READ.format(marks=_marks(len(part))), (service, *part)
            ).fetchone()
            for key, pid in _found_decoder.decode(found_json):
                self._ids.setdefault((service, key), pid)
            if states_json is not None:
                for profile in _profiles_decoder.decode(states_json):
                    if profile.id not in self._profiles and profile.id not in self._gone:
                        self._profiles[profile.id] = profile
                        self._stored.add(profile.id)
                        self._services[profile.id] = service
            self._looked_up.update((service, k) for k in part)

    def _id_block(self, size: int) -> tuple[int, int]:
        (top,) = self._conn.execute(
            "UPDATE profile_ids SET next = next + ? RETURNING next", (size,)
        ).fetchone()
        return top - size, top - 1

    def _merged(self, now_ms: int, service: str, survivor: int, other: Profile) -> None:
        if other.id in self._stored:
            self._moved.append((other.id, survivor))
        self._merges.append(
            (now_ms, service, survivor, other.id, _json.encode(other.keys).decode())
        )

    def _key_added(self, service: str, key: str) -> None:
        self._new_keys.append((service, key))

    def write(self) -> None:
        """Everything the works changed, in a few multi-row statements."""
        conn = self._conn
        if self._moved:
            for old, new in self._moved:
                conn.execute(
                    "UPDATE profile_keys SET profile_id = ? WHERE profile_id = ?", (new, old)
                )
            gone = [old for old, _ in self._moved]
            for part in _chunks(gone):
                conn.execute(f"DELETE FROM profiles WHERE id IN ({_marks(len(part))})", part)
        keys = [(s, k, self._ids[(s, k)]) for s, k in self._new_keys]
        for part in _chunks(keys):
            conn.execute(
                "INSERT INTO profile_keys (service, key, profile_id) VALUES "
                + ",".join(["(?,?,?)"] * len(part)),
                [v for row in part for v in row],
            )
        stored: list[tuple[str, int]] = []
        added: list[tuple[str, int]] = []
        for pid in self._dirty:
            profile = self._profiles.get(pid)
            if profile is not None:
                row = (profiles.encode_json(profile), pid)
                (stored if pid in self._stored else added).append(row)
        # An UPDATE by id costs one b-tree seek where an upsert costs two. Should a
        # stored profile be missing after all, the upsert writes it.
        changes = conn.total_changes
        conn.executemany("UPDATE profiles SET state = ? WHERE id = ?", stored)
        if conn.total_changes - changes != len(stored):
            added += stored
        for part in _chunks(added):
            conn.execute(
                "INSERT INTO profiles (id, service, state) VALUES "
                + ",".join(["(?,?,?)"] * len(part))
                + " ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                [v for state, pid in part for v in (pid, self._services[pid], state)],
            )
        for part in _chunks(self._merges):
            conn.execute(
                "INSERT INTO merges (time_ms, service, survivor, merged, keys) VALUES "
                + ",".join(["(?,?,?,?,?)"] * len(part)),
                [v for row in part for v in row],
            )

    def committed(self) -> None:
        """The transaction committed: what it wrote is what the cache now knows."""
        self._cache.committed(self._ids, self._profiles, self._services, self._gone)


class SQLiteProfileStore:
    def __init__(
        self, path: Path, timeout_s: float = 2.0, cache: ProfileCache | None = None
    ) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._cache = cache or ProfileCache()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock: IO[bytes] = path.with_suffix(".lock").open("ab")
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=timeout_s
            )
            wal.enter(self._conn)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            schema.ensure(self._conn, _SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise ProfileStoreDown(f"cannot open the profile store {path}: {e}") from e

    def set_timeout(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")

    def close(self) -> None:
        self._conn.close()
        self._lock.close()

    # Writes.
    def run(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]] = ()
    ) -> list[T | Exception]:
        if not works:
            return []
        self._acquire()
        try:
            return self._run_locked(works, prefetch)
        finally:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)

    def try_run(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]] = ()
    ) -> list[T | Exception] | None:
        if not works:
            return []
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            return self._run_locked(works, prefetch)
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

    def _run_locked(
        self, works: Sequence[Work[T]], prefetch: Sequence[tuple[str, Sequence[str]]]
    ) -> list[T | Exception]:
        """Run every work in one transaction. If one raises, nothing of the group is
        written and the others run again without it — works are pure functions of the
        stored state, so running them again gives the same result."""
        conn = self._conn
        cache = self._cache
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Changed exactly when another connection has committed since this one last
            # looked: then what the cache holds may be stale.
            (version,) = conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as e:
            _rollback(conn)
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        if version != cache.version:
            cache.reset(version)
        try:
            tx = _GroupTx(conn, len(works), cache)
            out, failed = tx.apply(works, prefetch, (sqlite3.Error,))
            if failed is None:
                tx.write()
                conn.execute("COMMIT")
                tx.committed()
            else:
                # The works changed cached profiles in place: forget them all.
                cache.reset()
                conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            cache.reset()
            _rollback(conn)
            raise ProfileStoreDown(f"profile store write failed: {e}") from e
        except BaseException:
            cache.reset()
            _rollback(conn)
            raise
        if failed is None:
            return out
        at, error = failed
        rest = [*works[:at], *works[at + 1 :]]
        again = self._run_locked(rest, prefetch) if rest else []
        return [*again[:at], error, *again[at:]]

    # Reads.
    def find(self, service: str, keys: Sequence[str]) -> list[Profile]:
        if not keys:
            return []
        try:
            rows = self._conn.execute(
                "SELECT DISTINCT p.id, p.state FROM profile_keys k "
                "JOIN profiles p ON p.id = k.profile_id "
                f"WHERE k.service = ? AND k.key IN ({_marks(len(keys))}) ORDER BY p.id",
                (service, *keys),
            ).fetchall()
        except sqlite3.Error as e:
            raise ProfileStoreDown(f"profile store unavailable: {e}") from e
        return [_profile_decoder.decode(state) for _, state in rows]

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

    def checkpoint(self, start_over_frames: int = _START_OVER_FRAMES) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, writers).

        Under steady writes a PASSIVE checkpoint never reaches the last frame (writers
        append while it copies), so the WAL never starts over: it grows until a writer
        checkpoints at ``_AUTOCHECKPOINT_PAGES``, inside its commit, on its event loop
        (a stall of tens of ms every few seconds at 2,000 decisions/s). Past
        ``start_over_frames`` the little left is copied while holding the writers'
        lock, so nothing is appended meanwhile and the next writer starts the WAL over.
        Writers wait that long for the lock, off their event loop (``try_run``).
        """
        (_, frames, _) = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames < start_over_frames:
            return
        self._acquire()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)


def _rollback(conn: sqlite3.Connection) -> None:
    # Nothing may be open: a failed statement can end the transaction by itself.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def default_path(root: Path) -> Path:
    return root / "p13n" / "profiles.sqlite"
