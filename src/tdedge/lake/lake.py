"""The Lake: one DuckDB connection with the DuckLake attached, and what tdedge does with it.

The loader opens it read-write and is its only regular writer; ``commit`` writes the
rows of several tables, their import errors, the bulk-import ids they carried and the
new journal positions in ONE DuckLake transaction. That is the exactly-once guarantee:
if the process dies before the commit, the journal is read again from the old position;
after it, the positions say those entries are done.

``tdedge query`` and the REST job API open it read-only in other processes; their
connection is confined to the lake's own files because it runs SQL written by users.

A Lake is used by one thread at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, NamedTuple, Self

import duckdb
import msgspec
import pyarrow as pa

from tdedge.config import Settings
from tdedge.errors import InvalidName, LakeError, PartitionTakenOver
from tdedge.lake import compaction, fence, location, system, upgrades
from tdedge.lake.batch import Batch, Deletion, ImportKey, TableRows
from tdedge.lake.catalog import (
    LAKE,
    LIVE_TABLES,
    LOCK_RETRIES,
    backoff,
    is_conflict,
    is_locked,
    retrying,
    write_lock,
)
from tdedge.lake.compaction import Slice
from tdedge.lake.connection import open_connection
from tdedge.lake.inlining import Budget
from tdedge.lake.retention import expire_import_errors, expire_table_rows
from tdedge.lake.sql import ident, literal, table_ref
from tdedge.lake.tables import Columns, create_table, evolve_table
from tdedge.names import (
    CONFLICTS,
    NAME_RULE,
    SYSTEM_DATABASE,
    is_reserved,
    is_valid_name,
    normalize,
)

log = logging.getLogger("tdedge.lake")

# The name Arrow tables are registered under while they are inserted.
_VIEW = "tdedge_incoming"
# The name the keys a lookup asks about are registered under.
_KEYS = "tdedge_keys"
# Schemas that are not user databases.
_NOT_DATABASES = frozenset({"main", SYSTEM_DATABASE})
# What DuckLake's stale-reader error names (see Lake.query).
_STALE_INLINED = "ducklake_inlined_data_"


class QueryResult(NamedTuple):
    columns: list[str]
    types: list[str]  # DuckDB type names, e.g. BIGINT, VARCHAR, TIMESTAMP WITH TIME ZONE
    rows: list[tuple[Any, ...]]


class Lake:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, settings: Settings, *, read_only: bool
    ) -> None:
        self._con = con
        self._settings = settings
        self._read_only = read_only
        self._schemas: set[str] = set()
        self._columns: dict[tuple[str, str], Columns] = {}
        # Tables compaction merged, and their small files then (lake/compaction.py).
        self._merged: dict[tuple[str, str], tuple[int, int]] = {}
        # This node's journal shards are stored under this prefix (location.py).
        self._shards = location.journal_prefix(settings)
        # A lake other nodes write too: their commits conflict with ours, and the
        # tables and columns cached here may have been made or widened by them.
        self._shared = bool(settings.lake_catalog)
        if not read_only:
            self.reload()

    # Opening and closing.
    @classmethod
    def open(cls, settings: Settings, *, read_only: bool = False) -> Self:
        """Attach the lake, creating it on first use; read-only for user queries."""
        return cls(open_connection(settings, read_only=read_only), settings, read_only=read_only)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Lake:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        return self._read_only

    def reload(self) -> None:
        """Re-read schemas and columns from the catalog (after a failed commit, say)."""
        schemas = self._fetch(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ?", [LAKE]
        )
        columns: dict[tuple[str, str], Columns] = {}
        found = self._fetch(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ? ORDER BY schema_name, table_name, column_index",
            [LAKE],
        )
        for schema, table, column, kind in found:
            columns.setdefault((schema, table), {})[column] = kind
        self._schemas = {s for (s,) in schemas}
        self._columns = columns

    # Loader side.
    def positions(self) -> dict[str, int]:
        """The journal position stored with the last commit: shard → last loaded seq."""
        found = self._fetch(system.READ_POSITIONS)
        return {
            shard: int(seq) for name, seq in found if (shard := self._own(str(name))) is not None
        }

    def _own(self, stored: str) -> str | None:
        """A shard's name as this node's journal calls it; None: another node's."""
        if not stored.startswith(self._shards):
            return None
        return stored[len(self._shards) :]

    def loaded_imports(self, keys: Iterable[ImportKey]) -> dict[ImportKey, str | None]:
        """Which of these keys are in ``bulk_imports`` already, and the upload token
        each was loaded from (system.loaded_imports)."""
        wanted = system.import_keys_table(keys)
        if wanted.num_rows == 0:
            return {}
        self._con.register(_KEYS, wanted)
        try:
            found = self._fetch(system.loaded_imports_sql(_KEYS))
        finally:
            self._con.unregister(_KEYS)
        return system.loaded_imports(found)

    def columns(self, database: str, table: str) -> Columns | None:
        """The table's columns (name → DuckDB type), or None when it does not exist yet."""
        if self._read_only:
            self.reload()
        found = self._columns.get((database, table))
        return None if found is None else dict(found)

    def has_table(self, database: str, table: str) -> bool:
        """Whether the table exists (as this writer last saw the lake)."""
        return (database, table) in self._columns

    def upgrade(self, now: float) -> list[str]:
        """Make the changes lake/upgrades.py lists that this lake has not had yet, each
        in one transaction with its record; returns the names of those made now."""
        self._require_writable()
        done = {str(name) for (name,) in self._fetch(upgrades.READ_DONE)}
        made: list[str] = []
        for name, step in upgrades.STEPS.items():
            if name in done:
                continue
            try:
                self._con.execute("BEGIN")
                changed = step(self._con, list(self._columns.items()))
                self._con.execute(upgrades.RECORD_DONE, [name, int(now)])
                self._con.execute("COMMIT")
            except duckdb.Error as e:
                self._abort()
                raise LakeError(f"lake upgrade {name} failed: {e}") from e
            except BaseException:
                self._abort()
                raise
            log.info("lake upgrade %s done: %d tables changed", name, changed)
            self.reload()
            made.append(name)
        return made

    def table_count(self, databases: Iterable[str]) -> int:
        """How many tables these databases hold (as of the last commit or reload)."""
        wanted = set(databases)
        return sum(1 for schema, _ in self._columns if schema in wanted)

    def ensure_schema(self, database: str) -> None:
        """Create the schema that holds ``database``'s tables (``tdedge db create``)."""
        self._require_writable()
        database = _database_name(database)
        if database in self._schemas:
            return
        statement = f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{ident(database)}"
        self._retrying(lambda: self._execute(statement), "create schema")
        self._schemas.add(database)

    def commit(self, batch: Batch) -> None:
        """Write every table's rows, the import errors, the bulk-import ids and the
        positions atomically.

        When another process holds the catalog (``tdedge db create``, say), SQLite can
        refuse the commit at once with "database is locked" (duckdb/ducklake#1309); a
        batch that carries positions or load marks is retried, after checking through
        them that the failed attempt did not land after all. Positions only move
        forward and marks are only added, so they tell.

        A batch read from positions that are not the stored ones any more is refused
        with PartitionTakenOver (lake/fence.py), never retried. A retried batch whose
        positions another loader committed meanwhile is taken as landed: its records
        are in the lake, once, whoever committed them.
        """
        self._require_writable()
        attempt = 0
        telling = bool(batch.positions or batch.marks or batch.jobs)
        while True:
            try:
                with write_lock(self._settings):
                    self._commit_once(batch)
                return
            except PartitionTakenOver:
                raise
            except LakeError as e:
                if not (telling and self._retryable(e)) or attempt >= LOCK_RETRIES:
                    raise
                error = e
            # DuckLake's conflict refuses the commit for sure; another loader's commit
            # of the same positions would make it look landed (lake/fence.py).
            if not is_conflict(error) and self.landed(batch):
                log.warning("the lake reported an error for a commit that landed: %s", error)
                return
            log.info("lake commit failed (%s); retrying the whole transaction", error)
            time.sleep(backoff(attempt))
            attempt += 1

    def _retryable(self, error: LakeError) -> bool:
        """Whether a failed commit is tried again at once, as a whole.

        On a lake other nodes share, any failure is: their commits conflict with
        ours even on other tables (each takes the next snapshot id) and DuckLake's own
        retries can run out, a table or column they made meanwhile fails our
        CREATE or ALTER until the cache is reloaded (``_abort`` does), and a catalog
        connection can drop. A batch the lake truly refuses fails every attempt and is
        then left to the loader (which commits its tables apart). On an embedded lake
        only SQLite's lock is: the loader is the only writer there.
        """
        return self._shared or is_locked(error)

    def _commit_once(self, batch: Batch) -> None:
        schemas = set(self._schemas)
        columns = dict(self._columns)
        budget = Budget(
            self._con,
            self._settings.lake_inlining_row_limit,
            self._settings.lake_inlining_max_escapes,
        )
        try:
            self._con.execute("BEGIN")
            if batch.read_from and self._shared:
                self._fence(batch, columns)
            for deletion in batch.deletions:
                self._delete(deletion, columns)
            for rows in batch.tables:
                self._write(rows, schemas, columns, budget)
            if batch.rejections:
                rejected = system.rejections_table(batch.rejections)
                self._insert(system.IMPORT_ERRORS, rejected, budget)
            if batch.imports:
                self._insert(system.BULK_IMPORTS, system.bulk_imports_table(batch.imports), budget)
            if batch.positions:
                stored = {self._shards + shard: seq for shard, seq in batch.positions.items()}
                self._insert(system.POSITIONS, system.positions_table(stored), budget)
            if batch.marks:
                marks = [
                    msgspec.structs.replace(m, shard=self._shards + m.shard) for m in batch.marks
                ]
                self._insert(system.LOAD_MARKS, system.marks_table(marks), budget)
            if batch.jobs:
                self._insert(system.JOB_WRITES, system.job_writes_table(batch.jobs), budget)
            arrivals = system.insert_arrivals(batch.tables, int(time.time()))
            if arrivals is not None:
                self._con.execute(arrivals)
            self._con.execute("COMMIT")
        except duckdb.Error as e:
            self._abort()
            raise LakeError(f"lake commit failed: {e}") from e
        except BaseException:
            self._abort()
            raise
        # Only a committed transaction changes what the lake looks like.
        self._schemas = schemas
        self._columns = columns

    def _fence(self, batch: Batch, columns: dict[tuple[str, str], Columns]) -> None:
        """Refuse ``batch`` unless it was read from the stored positions, and make the
        catalog refuse an overlapping commit of its shards (see lake/fence.py). The
        transaction's first statement; on a shared lake only."""
        read_from = {self._shards + shard: seq for shard, seq in batch.read_from.items()}
        moved = fence.moved(self._con, read_from)
        if moved:
            raise PartitionTakenOver([shard[len(self._shards) :] for shard in moved])
        for shard, seq in batch.read_from.items():
            after = batch.positions.get(shard, seq)
            fence.claim(self._con, self._shards + shard, after, columns)

    def landed(self, batch: Batch) -> bool:
        """Whether a commit of ``batch`` that reported an error landed after all: its
        positions are stored (or passed), and so are its load marks and job writes.
        Only for a batch that carries any."""
        if batch.jobs and not self.jobs_written([j.job_id for j in batch.jobs]):
            return False
        stored = self.positions()
        if any(stored.get(shard, -1) < seq for shard, seq in batch.positions.items()):
            return False
        if not batch.marks:
            return True
        marks = self.marks()
        return all(
            marks.get((m.database_name, m.table_name), {}).get(m.shard, -1) >= m.seq
            or stored.get(m.shard, -1) >= m.seq
            for m in batch.marks
        )

    def jobs_written(self, job_ids: list[int]) -> set[int]:
        """Which of these query jobs' writes are in the lake (system.JOB_WRITES)."""
        return {int(j) for (j,) in self._fetch(system.WRITTEN_JOBS, [job_ids])}

    def marks(self) -> dict[tuple[str, str], dict[str, int]]:
        """The load marks: (database, table) → shard → the last seq marked loaded."""
        found: dict[tuple[str, str], dict[str, int]] = {}
        for database, table, stored, seq in self._fetch(system.READ_MARKS):
            shard = self._own(str(stored))
            if shard is not None:
                found.setdefault((str(database), str(table)), {})[shard] = int(seq)
        return found

    def _retrying(self, action: Callable[[], None], what: str) -> None:
        """Run an idempotent catalog write, again while another process holds the lock."""
        retrying(action, self._retryable, what)

    def compact(self, now: float) -> None:
        """A whole compaction pass at once (see ``compaction``)."""
        for _ in self.compaction(now):
            pass

    def compaction(
        self,
        now: float,
        slice_s: float = math.inf,
        expiries: Mapping[tuple[str, str], int] | None = None,
    ) -> Iterator[Slice]:
        """One compaction pass, a slice at a time: each step of the iterator does about
        ``slice_s`` seconds of work (at least one table's) and says what it did.

        Steps: drop superseded position rows, passed load marks, bulk-import ids
        older than ``bulk_import_retention_s`` and import errors older than
        ``import_errors_retention_s`` (lake/retention.py); delete the rows of the tables
        in ``expiries`` ((database, table) → a unix time) whose ``time`` is before it,
        a table at a time, and rewrite its files left mostly deleted; flush the inlined
        rows of the tables that have some into Parquet; merge the small files of the
        tables that have several (lake/compaction.py says which); expire snapshots older than
        ``lake_retention_s``; delete the files those snapshots alone referenced
        (including the ones merged away) and files no commit ever referenced, once
        older than the retention.
        """
        self._require_writable()
        started = time.monotonic()
        self._prune_system(now)
        yield Slice("prune")
        for table, before in sorted((expiries or {}).items()):
            if table in self._columns:
                self._expire_rows(table, before)
                yield Slice("retention", (table,))
        found = self._fetch(compaction.TABLES_WITH_WORK)
        flush = [(str(s), str(t)) for s, t, inlined, _, _ in found if inlined]
        yield from self._per_table("flush", compaction.flush_call, flush, slice_s)
        merge = self._to_merge()
        failed = yield from self._per_table("merge", compaction.merge_call, merge, slice_s)
        for table in failed:
            self._merged.pop(table, None)  # asked again next pass
        cutoff = now - self._settings.lake_retention_s
        lake = literal(LAKE)
        older = "older_than => to_timestamp(?)"  # a tz-aware datetime would need pytz
        self._retrying(partial(self._expire_snapshots, cutoff), "expire snapshots")
        yield Slice("expire")
        steps: list[tuple[str, str, list[Any]]] = [
            # Only files of snapshots expired above are scheduled for deletion, all older
            # than the retention (DuckLake 1.5.5 with a SQLite catalog takes every
            # scheduled file as older than this cut-off, whatever its time).
            ("cleanup", f"CALL ducklake_cleanup_old_files({lake}, {older})", [cutoff]),
            # Files a writer wrote and never committed (it died mid-transaction). Files of
            # a transaction in flight are younger than the cut-off and are left alone.
            ("orphans", f"CALL ducklake_delete_orphaned_files({lake}, {older})", [cutoff]),
        ]
        for step, sql, params in steps:
            self._retrying(partial(self._execute, sql, params), sql)
            yield Slice(step)
        log.info(
            "lake compacted in %.1f s: %d tables flushed, %d merged (retention cut-off %s)",
            time.monotonic() - started,
            len(flush),
            len(merge),
            datetime.fromtimestamp(cutoff, UTC),
        )

    def _expire_snapshots(self, cutoff: float) -> None:
        """Expire the snapshots taken before ``cutoff`` (unix seconds), never the latest.

        Named by id: DuckLake 1.5.5's ``older_than`` on a SQLite catalog expired every
        snapshot but the latest, whatever the cut-off, and with them the history that
        time travel, the change feed and the arrivals roll-up read. DuckDB itself
        compares the snapshots' times correctly, so the ids are chosen here.
        """
        snapshots = f"ducklake_snapshots({literal(LAKE)})"
        expired = [
            int(r[0])
            for r in self._fetch(
                f"SELECT snapshot_id FROM {snapshots} WHERE snapshot_time < to_timestamp(?) "
                f"AND snapshot_id < (SELECT max(snapshot_id) FROM {snapshots})",
                [cutoff],
            )
        ]
        if expired:
            self._execute(
                f"CALL ducklake_expire_snapshots({literal(LAKE)}, versions => ?)", [expired]
            )

    def _prune_system(self, now: float) -> None:
        if self._fetch(system.COUNT_PASSED_MARKS)[0][0]:
            self._retrying(lambda: self._execute(system.PRUNE_MARKS), "prune load marks")
        total, shards = self._fetch(system.COUNT_POSITIONS)[0]
        if total > shards:
            self._retrying(lambda: self._execute(system.PRUNE_POSITIONS), "prune positions")
        forget = int(now - self._settings.bulk_import_retention_s)
        if self._fetch(system.COUNT_EXPIRED_IMPORTS, [forget])[0][0]:
            self._retrying(
                partial(self._execute, system.EXPIRE_IMPORTS, [forget]), "expire bulk import ids"
            )
        self._roll_up_arrivals(now)
        retention = self._settings.import_errors_retention_s

        def expire_errors() -> None:
            expired = expire_import_errors(self._con, now, retention)
            if expired:
                log.info("expired %d import errors past their retention", expired)

        self._retrying(expire_errors, "expire import errors")

    def _roll_up_arrivals(self, now: float) -> None:
        """Sum the arrival rows whose snapshots have expired (lake/system.py)."""
        cutoff = int(now - self._settings.lake_retention_s)
        if self._fetch(system.COUNT_OLD_ARRIVALS, [cutoff])[0][0] < system.ROLL_UP_ARRIVALS_AFTER:
            return

        def roll_up() -> None:
            insert, delete = system.ROLL_UP_ARRIVALS
            try:
                self._con.execute("BEGIN")
                self._con.execute(insert, [cutoff, cutoff])
                self._con.execute(delete, [cutoff])
                self._con.execute("COMMIT")
            except duckdb.Error as e:
                self._abort()
                raise LakeError(str(e)) from e

        self._retrying(roll_up, "roll up arrivals")

    def _expire_rows(self, table: tuple[str, str], cutoff: int) -> int:
        ref = table_ref(LAKE, *table)
        expired = 0

        def expire() -> None:
            nonlocal expired
            expired = expire_table_rows(self._con, ref, cutoff)

        try:
            self._retrying(expire, f"expire rows of {ref}")
            if expired:
                rewrite = compaction.rewrite_call(*table)
                self._retrying(partial(self._execute, rewrite), rewrite)
        except LakeError as e:
            log.warning("cannot expire rows of %s.%s, next pass then: %s", *table, e)
            return 0
        if expired:
            log.info(
                "expired %d rows of %s.%s past their retention (time before %d)",
                expired,
                *table,
                cutoff,
            )
        return expired

    def _to_merge(self) -> list[tuple[str, str]]:
        """Tables with small files to merge, but not those whose small files are the same
        as when they were last merged (DuckLake found nothing to do with them)."""
        found = {
            (str(s), str(t)): (int(small), int(newest))
            for s, t, _, small, newest in self._fetch(compaction.TABLES_WITH_WORK)
            if small >= 2
        }
        wanted = [key for key, files in found.items() if self._merged.get(key) != files]
        self._merged = found
        return wanted

    def _per_table(
        self,
        what: str,
        call: Callable[[str, str], str],
        tables: list[tuple[str, str]],
        slice_s: float,
    ) -> Generator[Slice, None, list[tuple[str, str]]]:
        """``call`` for each table, as many as fit in ``slice_s`` per transaction; returns
        the tables it failed for.

        A table whose call fails waits for the next pass, and the others of its slice
        are done again; a slice whose COMMIT fails is done again one table at a time.
        A catalog locked by another process is tried again at the next slice.
        """
        failed: list[tuple[str, str]] = []
        pending: deque[tuple[tuple[str, str], bool]] = deque((t, False) for t in tables)
        while pending:
            started = time.monotonic()
            done: list[tuple[str, str]] = []
            trying: tuple[str, str] | None = None
            try:
                self._con.execute("BEGIN")
                while pending and (not done or time.monotonic() - started < slice_s):
                    table, alone = pending[0]
                    if alone and done:
                        break
                    pending.popleft()
                    trying = table
                    self._con.execute(call(*table))
                    done.append(table)
                    trying = None
                    if alone:
                        break
                self._con.execute("COMMIT")
            except duckdb.Error as e:
                self._abort()
                if is_locked(e):
                    log.info("lake catalog locked by another writer; compaction waits")
                    again = [*done, trying] if trying is not None else done
                    pending.extendleft((t, False) for t in reversed(again))
                elif trying is not None:
                    log.warning("cannot %s %s.%s, next pass then: %s", what, *trying, e)
                    failed.append(trying)
                    pending.extendleft((t, False) for t in reversed(done))
                elif len(done) > 1:
                    log.warning("a compaction commit failed; one table at a time: %s", e)
                    pending.extendleft((t, True) for t in reversed(done))
                else:
                    log.warning("cannot %s %s.%s, next pass then: %s", what, *done[0], e)
                    failed.extend(done)
                yield Slice(what)
                continue
            yield Slice(what, tuple(done))
        return failed

    # Query side.
    def query(self, sql: str, database: str | None = None) -> QueryResult:
        """Run ``sql``; unqualified table names resolve in ``database`` when given."""
        try:
            return self._query(sql, database)
        except duckdb.Error as e:
            if not (self._read_only and _STALE_INLINED in str(e)):
                raise LakeError(str(e)) from e
            # DuckLake bug (duckdb/ducklake#1305, #1413): after another process flushes
            # inlined data, a separately attached reader keeps naming a dropped table
            # until it attaches again. A fresh connection sees the new catalog.
            log.warning("stale DuckLake inlined-data view; reconnecting the reader")
            self._con.close()
            self._con = open_connection(self._settings, read_only=True)
        try:
            return self._query(sql, database)
        except duckdb.Error as e:
            raise LakeError(str(e)) from e

    def _query(self, sql: str, database: str | None) -> QueryResult:
        if database is None:
            self._con.execute(f"USE {LAKE}")
        else:
            name = _database_name(database)
            if name not in self.databases():
                raise LakeError(f"database {name} does not exist in the lake")
            self._con.execute(f"USE {LAKE}.{ident(name)}")
        cursor = self._con.execute(sql)
        description = cursor.description
        if description is None:
            return QueryResult([], [], [])
        # Through Arrow: DuckDB's own conversion of TIMESTAMPTZ values needs pytz.
        table = cursor.to_arrow_table()
        names = [str(d[0]) for d in description]
        types = [str(d[1]) for d in description]
        rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
        return QueryResult(names, types, rows)

    def databases(self) -> list[str]:
        found = self._fetch(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ? ORDER BY schema_name",
            [LAKE],
        )
        return [s for (s,) in found if s not in _NOT_DATABASES]

    def tables(self, database: str) -> list[str]:
        found = self._fetch(LIVE_TABLES, [normalize(database)])
        return [str(t) for (t,) in found]

    def import_errors(self, limit: int = 100) -> QueryResult:
        """The newest import errors first (``tdedge errors``)."""
        return self.query(
            f"SELECT * FROM {system.IMPORT_ERRORS} "
            f"ORDER BY time DESC, journal_shard, journal_seq DESC LIMIT {int(limit)}"
        )

    # Internals.
    def _write(
        self,
        rows: TableRows,
        schemas: set[str],
        columns: dict[tuple[str, str], Columns],
        budget: Budget,
    ) -> None:
        if is_reserved(rows.database):
            raise LakeError(f"{SYSTEM_DATABASE} is reserved; rows cannot be written to it")
        if rows.rows.num_rows == 0 and not rows.create_empty:
            return
        if rows.database not in schemas:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{ident(rows.database)}")
            schemas.add(rows.database)
        ref = table_ref(LAKE, rows.database, rows.table)
        key = (rows.database, rows.table)
        existing = columns.get(key)
        if existing is None:
            statement, after = create_table(ref, rows.rows.schema)
            statements = [statement]
        else:
            existing = self._keep_exact_integers(ref, existing, rows.rows.schema, budget)
            statements, after = evolve_table(ref, existing, rows.rows.schema)
        for statement in statements:
            self._con.execute(statement)
        columns[key] = after
        if rows.rows.num_rows:
            self._insert(ref, rows.rows, budget)

    def _delete(self, deletion: Deletion, columns: dict[tuple[str, str], Columns]) -> None:
        if is_reserved(deletion.database):
            raise LakeError(f"{deletion.database} is reserved; rows cannot be deleted from it")
        if (deletion.database, deletion.table) not in columns:
            raise LakeError(f"table {deletion.database}.{deletion.table} does not exist")
        ref = table_ref(LAKE, deletion.database, deletion.table)
        if deletion.rows is None:
            self._con.execute(f"DELETE FROM {ref}")
            return
        if deletion.rows.num_rows == 0:
            return
        self._con.register(_VIEW, deletion.rows)
        try:
            self._con.execute(f"DELETE FROM {ref} WHERE rowid IN (SELECT row_id FROM {_VIEW})")
        finally:
            self._con.unregister(_VIEW)

    def _keep_exact_integers(
        self, ref: str, existing: Columns, schema: pa.Schema, budget: Budget
    ) -> Columns:
        """Before BIGINT columns widen to DOUBLE, keep their integers a DOUBLE would
        round in each row's td_type_conflicts, under the column's name (see
        loader/schema.py). Returns the table's columns after."""
        widening = [
            f.name for f in schema if existing.get(f.name) == "BIGINT" and f.type == pa.float64()
        ]
        if not widening:
            return existing
        columns = dict(existing)
        conflicts = ident(CONFLICTS)
        for name in widening:
            column = ident(name)
            inexact = f"CAST(CAST({column} AS DOUBLE) AS HUGEINT) <> {column}"
            found = self._con.execute(f"SELECT count(*) FROM {ref} WHERE {inexact}").fetchone()
            if not found or not found[0]:
                continue
            if CONFLICTS not in columns:
                self._con.execute(f"ALTER TABLE {ref} ADD COLUMN {conflicts} VARCHAR")
                columns[CONFLICTS] = "VARCHAR"
            kept = f"json_object({literal(name)}, {column})"
            # The rows it rewrites may hold any strings (inlining.py); it is rare.
            with budget.not_inlined():
                self._con.execute(
                    f"UPDATE {ref} SET {conflicts} = CAST(CASE WHEN {conflicts} IS NULL "
                    f"THEN {kept} ELSE json_merge_patch({conflicts}, {kept}) END AS VARCHAR) "
                    f"WHERE {inexact}"
                )
        return columns

    def _insert(self, ref: str, table: pa.Table, budget: Budget) -> None:
        """Insert ``table``'s rows; as a Parquet file when ``budget`` says they are too
        costly to inline (inlining.py)."""
        self._con.register(_VIEW, table)
        statement = f"INSERT INTO {ref} BY NAME SELECT * FROM {_VIEW}"
        try:
            if budget.admits(table):
                self._con.execute(statement)
            else:
                with budget.not_inlined():
                    self._con.execute(statement)
        finally:
            self._con.unregister(_VIEW)

    def _abort(self) -> None:
        """Roll back whatever is open and forget cached catalog state."""
        try:
            self._con.execute("ROLLBACK")
        except duckdb.TransactionException:
            # A failed COMMIT has already rolled back: nothing is open any more.
            log.debug("no transaction to roll back")
        self.reload()

    def _require_writable(self) -> None:
        if self._read_only:
            raise LakeError("the lake is open read-only")

    def _execute(self, sql: str, params: list[Any] | None = None) -> None:
        try:
            self._con.execute(sql, params)
        except duckdb.Error as e:
            raise LakeError(str(e)) from e

    def _fetch(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self._con.execute(sql, params).fetchall()
        except duckdb.Error as e:
            raise LakeError(str(e)) from e


def _database_name(database: str) -> str:
    if not is_valid_name(database):
        raise InvalidName(f"invalid database name {database!r}: {NAME_RULE}")
    return normalize(database)
