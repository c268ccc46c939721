"""One job slot: a DuckDB instance with the lake attached read-only, and its limits.

Each slot is its own DuckDB database instance, because ``memory_limit`` and
``threads`` are per instance: a job can use at most ``job_memory_limit`` (spilling to
``run/job-tmp/`` beyond what fits) and ``job_threads`` cores, whatever the others do.
The limits are set before the connection is sandboxed, which locks the configuration
so that a job's SQL cannot raise them. The instance lives across jobs: attaching the
lake again for every job would cost more than most queries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import duckdb
import msgspec

from tdedge.config import Settings
from tdedge.control.jobs import Job, JobResult
from tdedge.errors import LakeError
from tdedge.lake.catalog import LAKE, attach, sandbox
from tdedge.lake.extensions import connect
from tdedge.lake.sql import ident, literal
from tdedge.query.functions import register
from tdedge.query.results import ResultWriter, arrow_rows, result_path
from tdedge.query.translate import Context, TranslationError, translate
from tdedge.query.types import engine_type

log = logging.getLogger("tdedge.query")

BATCH_ROWS = 50_000
# DuckLake bug (duckdb/ducklake#1305): a reader attached before another process
# flushed inlined data keeps naming the dropped table until it attaches again.
_STALE_INLINED = "ducklake_inlined_data_"

# Why the runner interrupted a job, which decides how it ends.
Interrupted = Callable[[], str | None]


class Session:
    def __init__(self, settings: Settings, slot: int) -> None:
        self._settings = settings
        self._slot = slot
        self._con = self._open()

    def _open(self) -> duckdb.DuckDBPyConnection:
        s = self._settings
        tmp = s.root / "run" / "job-tmp" / str(self._slot)
        tmp.mkdir(parents=True, exist_ok=True)
        con = connect()
        try:
            con.execute(f"SET memory_limit = {literal(s.job_memory_limit)}")
            con.execute(f"SET threads = {int(s.job_threads)}")
            con.execute(f"SET temp_directory = {literal(str(tmp.resolve()))}")
            con.execute("SET TimeZone = 'UTC'")  # Presto's, and TD's, session zone
            register(con)
            attach(con, s, read_only=True)
            sandbox(con, s)
        except BaseException:
            con.close()
            raise
        return con

    def interrupt(self) -> None:
        """Stop the statement running now (from another thread)."""
        self._con.interrupt()

    def close(self) -> None:
        self._con.close()

    def run(self, job: Job, allowed: frozenset[str], interrupted: Interrupted) -> JobResult:
        """Run ``job`` to its end and write its result; never raises for the job's faults."""
        try:
            return self._run(job, allowed)
        except TranslationError as e:
            return JobResult(status="error", error=str(e))
        except duckdb.InterruptException:
            reason = interrupted() or "interrupted"
            if reason == "killed":
                return JobResult(status="killed", error="killed on request")
            return JobResult(status="error", error=reason)
        except duckdb.OutOfMemoryException as e:
            limit = self._settings.job_memory_limit
            return JobResult(status="error", error=f"over the job memory limit ({limit}): {e}")
        except duckdb.Error as e:
            if _STALE_INLINED not in str(e):
                return JobResult(status="error", error=_message(e))
        log.warning("stale DuckLake inlined-data view; reattaching the lake", extra={"job": job.id})
        self._con.close()
        self._con = self._open()
        try:
            return self._run(job, allowed)
        except duckdb.Error as e:
            return JobResult(status="error", error=_message(e))

    def _run(self, job: Job, allowed: frozenset[str]) -> JobResult:
        con = self._con
        columns = self._columns(allowed)
        schemas = {
            name
            for (name,) in con.execute(
                "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ?", [LAKE]
            ).fetchall()
        }
        # A database with no table yet has no schema in the lake.
        database = job.database if job.database in schemas else None
        con.execute(f"USE {LAKE}.{ident(database)}" if database else f"USE {LAKE}")
        sql = translate(
            job.query,
            Context(job.scheduled_time, job.type),
            job.database,
            columns,
            allowed,
        )
        log.debug("job sql", extra={"job": job.id, "sql": sql})
        cursor = con.execute(sql)
        description = cursor.description or []
        schema = [[str(d[0]), engine_type(str(d[1]), job.type)] for d in description]
        writer = ResultWriter(result_path(self._settings.job_results_dir, job.id))
        try:
            if description:
                reader = cursor.fetch_record_batch(BATCH_ROWS)
                for batch in reader:
                    writer.write(arrow_rows(batch))
            size = writer.close()
        except BaseException:
            writer.abort()
            raise
        return JobResult(
            status="success",
            result_schema=msgspec.json.encode(schema).decode(),
            num_records=writer.rows,
            result_size=size,
        )

    def _columns(self, allowed: frozenset[str]) -> dict[str, dict[str, dict[str, str]]]:
        """The columns of the account's tables, for typing the query."""
        found: dict[str, dict[str, dict[str, str]]] = {}
        rows: list[Any] = self._con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ?",
            [LAKE],
        ).fetchall()
        for schema, table, column, kind in rows:
            if schema in allowed:
                found.setdefault(schema, {}).setdefault(table, {})[column] = kind
        for database in allowed:
            found.setdefault(database, {})
        return found


def _message(e: duckdb.Error) -> str:
    return str(e).strip()


def open_sessions(settings: Settings) -> list[Session]:
    try:
        return [Session(settings, slot) for slot in range(settings.job_workers)]
    except duckdb.Error as e:
        raise LakeError(f"cannot open the lake for jobs: {e}") from e
