"""A DuckDB instance that sees one account's share of the lake, with its limits.

Each session is its own DuckDB database instance, because ``memory_limit``,
``threads`` and the files it may open are per instance: a job can use at most
``job_memory_limit`` (spilling to ``run/job-tmp/`` beyond what fits) and
``job_threads`` cores, whatever the others do. Its lake holds only the catalog rows of
the account's databases and may open only their folders (lake/scope.py); the limits
and folders are set before the configuration is locked, so a job's SQL cannot change
them. An instance serves the next job of the same account too, its lake refreshed
first: attaching a lake costs more than most queries.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import msgspec

from tdedge.config import Settings
from tdedge.control.jobs import Job, JobResult
from tdedge.errors import LakeError
from tdedge.lake.catalog import LAKE, sandbox
from tdedge.lake.extensions import USER_EXTENSIONS, connect
from tdedge.lake.scope import ScopedLake
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


@dataclass(frozen=True, slots=True)
class Scope:
    """What a job may read: its account's databases, as the control plane lists them."""

    account_id: int
    databases: frozenset[str]


class Session:
    def __init__(self, settings: Settings, scope: Scope, number: int) -> None:
        self._settings = settings
        self.scope = scope
        self._tmp = settings.root / "run" / "job-tmp" / str(number)
        self._lake: ScopedLake
        self._con = self._open()

    def _open(self) -> duckdb.DuckDBPyConnection:
        s = self._settings
        self._tmp.mkdir(parents=True, exist_ok=True)
        con = connect(USER_EXTENSIONS)
        try:
            con.execute(f"SET memory_limit = {literal(s.job_memory_limit)}")
            con.execute(f"SET threads = {int(s.job_threads)}")
            con.execute(f"SET temp_directory = {literal(str(self._tmp.resolve()))}")
            con.execute("SET TimeZone = 'UTC'")  # Presto's, and TD's, session zone
            register(con, s.geoip_database)
            self._lake = ScopedLake(s.lake_catalog, s.lake_data, self.scope.databases)
            self._lake.attach(con)
            self._lake.refresh(con)
            sandbox(con, self._lake.folders())
        except duckdb.Error as e:
            con.close()
            raise LakeError(f"cannot open the lake for jobs: {e}") from e
        except BaseException:
            con.close()
            raise
        return con

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The session's DuckDB connection, as a job's SQL finds it (for tests)."""
        return self._con

    def refresh(self) -> bool:
        """Bring the session's lake up to the catalog's current snapshot; False when it
        was there already."""
        return self._lake.refresh(self._con)

    def interrupt(self) -> None:
        """Stop the statement running now (from another thread)."""
        self._con.interrupt()

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def run(self, job: Job, interrupted: Interrupted) -> JobResult:
        """Run ``job`` to its end and write its result; never raises for the job's faults."""
        try:
            self.refresh()
            return self._run(job)
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
            return self._run(job)
        except duckdb.Error as e:
            return JobResult(status="error", error=_message(e))

    def _run(self, job: Job) -> JobResult:
        con = self._con
        allowed = self.scope.databases
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
        rows: list[tuple[str, str, str, str]] = self._con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ?",
            [LAKE],
        ).fetchall()
        for schema, table, column, kind in rows:
            found.setdefault(schema, {}).setdefault(table, {})[column] = kind
        for database in allowed:
            found.setdefault(database, {})
        return found


# How DuckDB words a column no table has, once the translation aliased it as itself
# (``nosuch AS nosuch``), and in general: said as Presto says it instead, as a TD client
# expects and as the message is true.
_ALIASED_UNKNOWN = re.compile(
    r'Column "([^"]+)" referenced that exists in the SELECT clause - but this column '
    r"cannot be referenced before it is defined"
)
_UNKNOWN = re.compile(r'Referenced column "([^"]+)" not found in FROM clause!')


def _message(e: duckdb.Error) -> str:
    text = str(e).strip()
    found = _ALIASED_UNKNOWN.search(text)
    if found is not None:  # DuckDB's words here are about an alias the user never wrote
        return f"Column '{found.group(1)}' cannot be resolved"
    found = _UNKNOWN.search(text)
    if found is not None:  # DuckDB's words name the columns there are: kept
        return f"Column '{found.group(1)}' cannot be resolved ({text})"
    return text
