"""A DuckDB instance that sees one account's share of the lake, with its limits.

Each session is its own DuckDB database instance, because ``memory_limit``,
``threads`` and the files it may open are per instance: a job can use at most
``job_memory_limit`` (spilling to ``run/job-tmp/`` beyond what fits) and
``job_threads`` cores, whatever the others do. Its lake holds only the catalog rows of
the account's databases and may open only their folders (lake/scope.py); the limits
and folders are set before the configuration is locked, so a job's SQL cannot change
them. An instance serves the next job of the same account too, its lake refreshed
first: attaching a lake costs more than most queries.

A job's statement (query/statements.py) decides what the session does: a query is
translated and its rows stored as the job's result; SHOW and DESCRIBE are answered from
the session's own lake (query/show.py); a write computes its rows (or the row ids it
deletes) here, and the runner's TableWriter writes them (query/writes.py): the session
itself never writes the lake, whose copy here is the account's alone.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from tdedge.config import Settings
from tdedge.control.jobs import Job, JobResult
from tdedge.errors import LakeError
from tdedge.lake.catalog import LAKE, sandbox
from tdedge.lake.extensions import connect
from tdedge.lake.location import user_extensions
from tdedge.lake.scope import ScopedLake
from tdedge.lake.sql import ident, literal
from tdedge.names import is_reserved
from tdedge.query import unnest
from tdedge.query.functions import register
from tdedge.query.show import answer
from tdedge.query.statements import (
    ShowColumns,
    ShowSchemas,
    ShowTables,
    Write,
    classify,
    result_target,
    statement_database,
)
from tdedge.query.translate import Context, TranslationError, translate
from tdedge.query.types import TEXT_TYPES, engine_type
from tdedge.query.values import arrow_rows
from tdedge.query.writes import Request, TableWriter, WriteError, column_types, conformed_rows
from tdedge.results.store import ResultStore, ResultStoreDown

log = logging.getLogger("tdedge.query")

BATCH_ROWS = 50_000
# DuckLake bug (duckdb/ducklake#1305): a reader attached before another process
# flushed inlined data keeps naming the dropped table until it attaches again.
_STALE_INLINED = "ducklake_inlined_data_"

# Presto's nan() and infinity(), which DuckDB lacks: pytd's insert_into writer sends
# them for NaN and infinite floats of a DataFrame.
_PRESTO_CONSTANTS = (
    "CREATE TEMP MACRO nan() AS CAST('NaN' AS DOUBLE)",
    "CREATE TEMP MACRO infinity() AS CAST('Infinity' AS DOUBLE)",
)

# Why the runner interrupted a job, which decides how it ends.
Interrupted = Callable[[], str | None]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a job may read: its account's databases, as the control plane lists them."""

    account_id: int
    databases: frozenset[str]


class Session:
    def __init__(self, settings: Settings, scope: Scope, number: int, results: ResultStore) -> None:
        self._settings = settings
        self.scope = scope
        self._results = results
        self._tmp = settings.root / "run" / "job-tmp" / str(number)
        self._lake: ScopedLake
        self._con = self._open()

    def _open(self) -> duckdb.DuckDBPyConnection:
        s = self._settings
        self._tmp.mkdir(parents=True, exist_ok=True)
        con = connect(user_extensions(s))
        try:
            con.execute(f"SET memory_limit = {literal(s.job_memory_limit)}")
            con.execute(f"SET threads = {int(s.job_threads)}")
            con.execute(f"SET temp_directory = {literal(str(self._tmp.resolve()))}")
            con.execute("SET TimeZone = 'UTC'")  # Presto's, and TD's, session zone
            register(con, s.geoip_database)
            for statement in _PRESTO_CONSTANTS:
                con.execute(statement)
            self._lake = ScopedLake(s, self.scope.databases)
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

    def run(
        self,
        job: Job,
        interrupted: Interrupted,
        writer: TableWriter | None = None,
        writable: frozenset[str] = frozenset(),
    ) -> JobResult:
        """Run ``job`` to its end and write its result; never raises for the job's faults.

        ``writer`` makes the writes of jobs that write, into ``writable`` databases
        only (those the job's key may write, control/access.py)."""
        try:
            self.refresh()
            return self._run(job, writer, writable)
        except (TranslationError, WriteError) as e:
            return JobResult(status="error", error=str(e))
        except ResultStoreDown as e:  # the job ran; its result could not be kept
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
            return self._run(job, writer, writable)
        except (TranslationError, WriteError) as e:
            return JobResult(status="error", error=str(e))
        except duckdb.Error as e:
            return JobResult(status="error", error=_message(e))

    def _run(self, job: Job, writer: TableWriter | None, writable: frozenset[str]) -> JobResult:
        con = self._con
        allowed = self.scope.databases
        columns = self._columns(allowed)
        # A database with no table yet has no schema in the lake.
        database = job.database if columns.get(job.database) else None
        con.execute(f"USE {LAKE}.{ident(database)}" if database else f"USE {LAKE}")
        statement = classify(job.query, job.type, job.database)
        if isinstance(statement, ShowTables | ShowColumns | ShowSchemas):
            shown = statement_database(statement)
            if shown is not None and shown not in allowed:
                raise TranslationError(f"Schema '{shown}' does not exist")
            names, types, rows = answer(statement, columns, job.type)
            return self._result(job, names, types, [rows])
        if isinstance(statement, Write):
            return self._write(job, statement, columns, writer, writable)
        relation = self._relation(job, statement.query, columns)
        names = [str(c) for c in relation.columns]
        types = [str(t) for t in relation.types]
        if job.result_url is not None:
            return self._into_table(job, relation, columns, writer, writable)
        reader = relation.to_arrow_reader(BATCH_ROWS)
        return self._result(job, names, types, (arrow_rows(batch) for batch in reader))

    def _into_table(
        self,
        job: Job,
        relation: duckdb.DuckDBPyRelation,
        columns: dict[str, dict[str, dict[str, str]]],
        writer: TableWriter | None,
        writable: frozenset[str],
    ) -> JobResult:
        """A query whose result goes into a table too (TD's ``result`` URL): the rows
        are computed once, stored as the job's result and written into the table."""
        assert job.result_url is not None
        into = result_target(job.result_url)
        target = into.target
        self._may_write(target.database, writer, writable)
        names = [str(c) for c in relation.columns]
        types = [str(t) for t in relation.types]
        max_rows = self._settings.job_write_max_rows
        found = relation.limit(max_rows + 1).to_arrow_table()
        if found.num_rows > max_rows:
            raise WriteError(
                f"a job writes at most {max_rows} rows at once (job_write_max_rows); "
                "split the write into smaller ones"
            )
        existing = columns.get(target.database, {}).get(target.table)
        rows = conformed_rows(self._con.from_arrow(found), existing, job.scheduled_time, max_rows)
        assert writer is not None
        writer.write(
            Request(
                job_id=job.id,
                kind="insert",
                target=target,
                rows=rows,
                deleted=None,
                replace=into.replace,
                create_missing=True,
                databases=self.scope.databases,
            )
        )
        batches = (arrow_rows(batch) for batch in found.to_batches(BATCH_ROWS))
        return msgspec.structs.replace(self._result(job, names, types, batches), wrote=True)

    def _may_write(
        self, database: str, writer: TableWriter | None, writable: frozenset[str]
    ) -> None:
        if database not in self.scope.databases or is_reserved(database):
            raise TranslationError(f"database {database} does not exist")
        if writer is None or database not in writable:
            raise WriteError(f"the job's API key may not write into database {database}")

    def _relation(
        self, job: Job, query: str, columns: dict[str, dict[str, dict[str, str]]]
    ) -> duckdb.DuckDBPyRelation:
        """The translated query, as a relation not yet run, its values readable."""
        query = unnest.rewrite(query, job.type, job.database, columns)
        sql = translate(
            query,
            Context(job.scheduled_time, job.type),
            job.database,
            columns,
            self.scope.databases,
        )
        log.debug("job sql", extra={"job": job.id, "sql": sql})
        relation = self._con.sql(sql)
        if relation is None:
            raise TranslationError("the statement gives no rows")
        types = [str(t) for t in relation.types]
        if any(t in TEXT_TYPES for t in types):
            # Their Arrow form is bytes or drops the zone: read as their text.
            listed = ", ".join(
                f"CAST(#{i + 1} AS VARCHAR) AS {ident(str(n))}"
                if t in TEXT_TYPES
                else f"#{i + 1} AS {ident(str(n))}"
                for i, (n, t) in enumerate(zip(relation.columns, types, strict=True))
            )
            relation = relation.project(listed)
        return relation

    def _result(
        self, job: Job, names: list[str], types: list[str], batches: Iterable[list[list[Any]]]
    ) -> JobResult:
        schema = [[n, engine_type(t, job.type)] for n, t in zip(names, types, strict=True)]
        writer = self._results.writer(job.id, job.attempts)
        try:
            for rows in batches:
                writer.write(rows)
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

    def _write(
        self,
        job: Job,
        statement: Write,
        columns: dict[str, dict[str, dict[str, str]]],
        writer: TableWriter | None,
        writable: frozenset[str],
    ) -> JobResult:
        target = statement.target
        if job.result_url is not None:
            raise WriteError("a job that writes into a table has no result to write elsewhere")
        self._may_write(target.database, writer, writable)
        assert writer is not None
        if statement.kind == "drop":
            dropped = writer.drop(target, statement.if_exists)
            done = self._result(job, ["result"], ["BOOLEAN"], [[[dropped]]])
            return msgspec.structs.replace(done, wrote=dropped)
        existing = columns.get(target.database, {}).get(target.table)
        rows: pa.Table | None = None
        deleted: pa.Table | None = None
        deleted_all = 0  # a DELETE without WHERE: the rows the table had
        max_rows = self._settings.job_write_max_rows
        if statement.kind in ("insert", "ctas") and statement.source is not None:
            relation = self._relation(job, statement.source, columns)
            rows = conformed_rows(relation, existing, job.scheduled_time, max_rows)
        elif statement.kind == "create":
            rows = column_types(statement.columns).empty_table()
        elif statement.source is not None:
            found = self._relation(job, statement.source, columns).to_arrow_table()
            deleted = found.select([0]).cast(pa.schema([("row_id", pa.int64())]))
        elif existing is not None:
            counted = self._con.execute(
                f"SELECT count(*) FROM {LAKE}.{ident(target.database)}.{ident(target.table)}"
            ).fetchone()
            deleted_all = int(counted[0]) if counted else 0
        request = Request(
            job_id=job.id,
            kind=statement.kind,
            target=target,
            rows=rows,
            deleted=deleted,
            if_not_exists=statement.if_not_exists,
            databases=self.scope.databases,
        )
        written = writer.write(request)
        if statement.kind == "delete" and deleted is None:
            written = deleted_all
        if statement.kind == "create":
            done = self._result(job, ["result"], ["BOOLEAN"], [[[True]]])
        else:
            done = self._result(job, ["rows"], ["BIGINT"], [[[written]]])
        return msgspec.structs.replace(done, wrote=True)

    def _columns(self, allowed: frozenset[str]) -> dict[str, dict[str, dict[str, str]]]:
        """The columns of the account's tables, for typing the query."""
        found: dict[str, dict[str, dict[str, str]]] = {}
        rows: list[tuple[str, str, str, str]] = self._con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ? ORDER BY schema_name, table_name, column_index",
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
