"""Query jobs that write: their rows shaped by ingest's type rule, written in one
transaction by tdedge itself.

A job's SQL never runs on a connection that can write: the rows to write (an INSERT's
or CREATE TABLE AS's query, a DELETE's row ids) are computed in the job's sandboxed
session like any query, shaped there by ``conform`` and handed as Arrow to
``TableWriter``, which writes them through the Lake — the code path of the loader's
batches: new tables and columns are made and BIGINT widens to DOUBLE as for ingested
records (loader/schema.py), in one DuckLake transaction with a ``job_writes`` row.

That row makes a write happen once: a job run again after its runner died, or a
commit that reported an error but landed, is recognised (Lake.landed). Row-writing
transactions of the loader and of jobs take turns (catalog.write_lock), so neither
ever fails for the other.

Ingest's rule for a result's columns
  Integers → BIGINT, floating and decimal numbers → DOUBLE, booleans → BOOLEAN,
  strings → VARCHAR; arrays, maps and rows → VARCHAR holding their JSON text (as
  ingested arrays are); timestamps, dates and other types → VARCHAR holding their
  text. A column that already exists takes a value that fits it (any value fits
  VARCHAR, as its text); one that does not fit is NULL there and kept in
  ``td_type_conflicts`` under the column's name. A column of only NULLs is not made.
  tdedge's own columns (``_tdedge_id``, of a table copied with ``SELECT *``) are not
  written: they belong to the ingested records.
  ``time`` is BIGINT unix seconds as for ingest: a valid one (from an integer, an
  integral number or string, or a timestamp) is kept; a row without one gets the job's
  issue time, and an invalid original goes to ``td_type_conflicts``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from sqlalchemy.engine import Engine

from tdedge import drops
from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake.batch import Batch, Deletion, JobWrite, TableRows
from tdedge.lake.inventory import LakeCatalog
from tdedge.lake.lake import Lake
from tdedge.lake.sql import ident, literal
from tdedge.loader.schema import TIME, TIME_MAX, TIME_MIN, column_type, fold, usable_name
from tdedge.names import CONFLICTS, RESERVED_PREFIX
from tdedge.query.statements import Target, WriteKind

log = logging.getLogger("tdedge.query")

# The door of the rows a query job writes, as the console shows it.
QUERY_DOOR = "query"
_INTEGERS = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "HUGEINT",
        "UHUGEINT",
    }
)
_FLOATS = frozenset({"FLOAT", "DOUBLE"})
_TEXTS = frozenset({"VARCHAR", "JSON", "UUID"})
_TIMESTAMPS = ("TIMESTAMP", "DATE")
_NESTED = ("STRUCT(", "MAP(", "UNION(")
_UNNAMED = re.compile(r"_c(?:ol)?\d+")
_STALE_INLINED = "ducklake_inlined_data_"
# A conflict between a job and another writer that DuckLake could not resolve: the
# whole transaction is tried again on the catalog's new state, this many times.
CONFLICT_RETRIES = 3


class WriteError(Exception):
    """The job's write cannot happen; the message says why, for the job's error."""


def ingest_kind(duckdb_type: str) -> str | None:
    """The column type ingest's rule gives values of ``duckdb_type``; None for NULL."""
    upper = duckdb_type.upper()
    if upper == '"NULL"' or upper == "NULL":
        return None
    if upper in _INTEGERS:
        return "BIGINT"
    if upper in _FLOATS or upper.startswith("DECIMAL"):
        return "DOUBLE"
    if upper == "BOOLEAN":
        return "BOOLEAN"
    return "VARCHAR"


def _as_text(column: str, duckdb_type: str) -> str:
    """SQL giving the VARCHAR ingest would store for a value of ``duckdb_type``."""
    upper = duckdb_type.upper()
    if upper in _TEXTS or upper.startswith("ENUM"):
        return f"CAST({column} AS VARCHAR)"
    if upper.endswith("]") or upper.startswith(_NESTED):
        return f"CAST(to_json({column}) AS VARCHAR)"
    if upper == "TIMESTAMP WITH TIME ZONE":
        return f"strftime({column}, '%Y-%m-%d %H:%M:%S.%g') || ' UTC'"
    if upper.startswith("TIMESTAMP"):
        return f"strftime(CAST({column} AS TIMESTAMP), '%Y-%m-%d %H:%M:%S.%g')"
    if upper == "BLOB":
        return f"to_base64({column})"
    return f"CAST({column} AS VARCHAR)"


@dataclass(frozen=True, slots=True)
class Shaped:
    sql: str  # a SELECT over the relation named ``source``
    columns: dict[str, str]  # the columns it gives: name → ingest type


def conform(
    names: list[str],
    types: list[str],
    existing: dict[str, str] | None,
    job_time: int,
    source: str,
) -> Shaped:
    """The SELECT that turns a result (``names``/``types``, DuckDB's) into rows for a
    table whose columns are ``existing`` (None: a new table), by ingest's rule."""
    folded = [fold(n) for n in names]
    seen: set[str] = set()
    for name, original in zip(folded, names, strict=True):
        if name in seen:
            raise WriteError(f"column {original} appears twice in the rows to write")
        seen.add(name)
        if _UNNAMED.fullmatch(name):
            raise WriteError(
                f"name every column of the rows to write (… AS name): {original} has no name"
            )
        if name.startswith(RESERVED_PREFIX):
            continue  # tdedge's own (a copied table's _tdedge_id): never copied nor forged
        if name != CONFLICTS and not usable_name(name):
            raise WriteError(f"{original!r} cannot name a column of a table")
    current = existing or {}
    outputs: list[str] = []
    columns: dict[str, str] = {}
    conflicts: list[str] = []  # JSON objects, each NULL where nothing conflicts
    carried: str | None = None  # the source's own td_type_conflicts
    have_time = False
    for position, (name, kind_name) in enumerate(zip(folded, types, strict=True)):
        ref = f"c{position}"
        if name.startswith(RESERVED_PREFIX):
            continue
        if name == CONFLICTS:
            carried = _as_text(ref, kind_name)
            continue
        kind = ingest_kind(kind_name)
        if name == TIME:
            have_time = True
            value, conflict = _time(ref, kind_name, job_time)
            outputs.append(f"{value} AS {ident(TIME)}")
            columns[TIME] = "BIGINT"
            conflicts.append(conflict)
            continue
        if kind is None:
            continue  # only NULLs: a new column is not made, an existing one gets NULL
        value = ref if kind != "VARCHAR" else _as_text(ref, kind_name)
        if kind == "BIGINT":
            value = f"TRY_CAST({ref} AS BIGINT)"
            overflow = f"{ref} IS NOT NULL AND {value} IS NULL"
            conflicts.append(_conflict(name, f"CAST({ref} AS VARCHAR)", overflow))
        elif kind == "DOUBLE":
            value = f"CAST({ref} AS DOUBLE)"
        have = current.get(name)
        target = column_type(have, [kind])  # type: ignore[list-item]
        if target == kind or (target == "DOUBLE" and kind == "BIGINT"):
            outputs.append(f"CAST({value} AS {target}) AS {ident(name)}")
            columns[name] = str(target)
        elif target == "VARCHAR":
            text = value if kind == "VARCHAR" else f"CAST({value} AS VARCHAR)"
            outputs.append(f"{text} AS {ident(name)}")
            columns[name] = "VARCHAR"
        else:
            # The table's column cannot hold these values: NULL there, kept aside.
            conflicts.append(_conflict(name, value, f"{value} IS NOT NULL"))
    if not have_time:
        outputs.insert(0, f"CAST({int(job_time)} AS BIGINT) AS {ident(TIME)}")
        columns[TIME] = "BIGINT"
    merged = _merged([c for c in conflicts if c], carried)
    if merged is not None:
        outputs.append(f"{merged} AS {ident(CONFLICTS)}")
        columns[CONFLICTS] = "VARCHAR"
    renamed = ", ".join(f"#{i + 1} AS c{i}" for i in range(len(names)))
    sql = f"SELECT {', '.join(outputs)} FROM (SELECT {renamed} FROM {source})"
    return Shaped(sql, columns)


def _time(ref: str, kind_name: str, job_time: int) -> tuple[str, str]:
    """``time`` as ingest keeps it, and the conflict for an invalid original."""
    upper = kind_name.upper()
    if upper.startswith(_TIMESTAMPS):
        seconds = f"CAST(floor(epoch(CAST({ref} AS TIMESTAMP))) AS BIGINT)"
    elif ingest_kind(kind_name) is None:
        seconds = "CAST(NULL AS BIGINT)"
    else:
        number = f"TRY_CAST(trim(CAST({ref} AS VARCHAR)) AS DOUBLE)"
        seconds = f"CASE WHEN {number} = floor({number}) THEN TRY_CAST({number} AS BIGINT) END"
    valid = f"({seconds} >= {TIME_MIN} AND {seconds} < {TIME_MAX})"
    value = f"CASE WHEN {valid} THEN {seconds} ELSE CAST({int(job_time)} AS BIGINT) END"
    original = ref if ingest_kind(kind_name) != "VARCHAR" else _as_text(ref, kind_name)
    conflict = _conflict(TIME, original, f"{ref} IS NOT NULL AND NOT coalesce({valid}, false)")
    return value, conflict


def _conflict(name: str, value: str, when: str) -> str:
    return f"CASE WHEN {when} THEN json_object({literal(name)}, {value}) END"


def _merged(parts: list[str], carried: str | None) -> str | None:
    """One JSON object of every conflicting value of a row, NULL for none."""
    if not parts and carried is None:
        return None
    merged = f"TRY_CAST({carried} AS JSON)" if carried is not None else "NULL"
    for part in parts:
        merged = (
            f"CASE WHEN {part} IS NULL THEN {merged} WHEN {merged} IS NULL THEN {part} "
            f"ELSE json_merge_patch({merged}, {part}) END"
        )
    return f"CAST({merged} AS VARCHAR)"


def column_types(declared: tuple[tuple[str, str], ...]) -> pa.Schema:
    """A CREATE TABLE's columns as the lake's (an empty Arrow schema), ``time`` first."""
    arrow = {"BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_()}
    fields = [pa.field(TIME, pa.int64())]
    seen = {TIME}
    for name, kind in declared:
        if name in seen:
            if name == TIME:
                continue
            raise WriteError(f"column {name} appears twice")
        if not usable_name(name):
            raise WriteError(f"{name!r} cannot name a column of a table")
        seen.add(name)
        base = kind.split("(")[0].strip().upper()
        mapped = ingest_kind("DOUBLE" if base in {"REAL", "DECIMAL"} else base)
        fields.append(pa.field(name, arrow.get(mapped or "VARCHAR", pa.string())))
    return pa.schema(fields)


@dataclass(frozen=True, slots=True)
class Request:
    """One job's write, as the session computed it."""

    job_id: int
    kind: WriteKind
    target: Target
    rows: pa.Table | None  # the rows to write (insert, ctas, create: empty)
    deleted: pa.Table | None  # delete: the row ids (column row_id); None: every row
    if_not_exists: bool = False
    replace: bool = False  # a result written with mode=replace: its rows replace the table's
    create_missing: bool = False  # a result written into a table that does not exist makes it
    databases: frozenset[str] = frozenset()  # the account's, for its table limit


class TableWriter:
    """Writes jobs' rows into the lake from the runner process: one writable Lake,
    one job at a time (a Lake is used by one thread at a time)."""

    def __init__(self, settings: Settings, control: Engine | None = None) -> None:
        self._settings = settings
        self._control = control  # the control database, for DROP TABLE
        self._lake: Lake | None = None
        self._lock = threading.Lock()

    def drop(self, target: Target, if_exists: bool) -> bool:
        """DROP TABLE: the REST API's table delete (drops.py), so the catalog, the
        loader and the retention rules see it as they see that one. False when the
        table was not there (IF EXISTS)."""
        if self._control is None:
            raise WriteError("this job runner cannot drop tables")
        name = f"{target.database}.{target.table}"
        with self._lock:
            catalog = LakeCatalog(self._settings)
            try:
                if catalog.table(target.database, target.table) is None:
                    if if_exists:
                        return False
                    raise WriteError(f"table {name} does not exist")
                drops.drop_table(catalog, self._control, target.database, target.table)
            except LakeError as e:
                raise WriteError(f"the lake refused to drop {name}: {e}") from e
            finally:
                catalog.close()
        return True

    def close(self) -> None:
        with self._lock:
            if self._lake is not None:
                self._lake.close()
                self._lake = None

    def write(self, request: Request) -> int:
        """Make the write; returns how many rows it wrote or deleted."""
        with self._lock:
            for attempt in range(2):
                try:
                    return self._write(request)
                except LakeError as e:
                    if self._lake is not None:
                        self._lake.close()
                        self._lake = None
                    # DuckLake bug (duckdb/ducklake#1305): a connection attached before
                    # another process flushed inlined rows names their dropped table
                    # until it attaches again; the job_writes row makes a retry safe.
                    if attempt == 0 and _STALE_INLINED in str(e):
                        log.warning("stale DuckLake inlined-data view; reopening the writer")
                        continue
                    raise WriteError(f"the lake refused the write: {e}") from e
            raise AssertionError("unreachable")

    def _write(self, request: Request) -> int:
        if self._lake is None:
            self._lake = Lake.open(self._settings)
        lake = self._lake
        for attempt in range(CONFLICT_RETRIES + 1):
            lake.reload()
            if lake.jobs_written([request.job_id]):
                log.info("the job's write is in the lake already", extra={"job": request.job_id})
                return _count(request)
            batch = self._batch(lake, request)
            if batch is None:
                return 0
            try:
                lake.commit(batch)
                return _count(request)
            except LakeError as e:
                if "conflict" not in str(e).lower() or attempt == CONFLICT_RETRIES:
                    raise
                log.info("a job's write conflicted with another writer; trying again")
        return 0

    def _batch(self, lake: Lake, r: Request) -> Batch | None:
        target = r.target
        exists = lake.columns(target.database, target.table) is not None
        name = f"{target.database}.{target.table}"
        creates = r.kind in ("ctas", "create") or (r.create_missing and not exists)
        if creates:
            if exists:
                if r.if_not_exists:
                    return None
                raise WriteError(f"table {name} already exists")
            limit = self._settings.max_tables_per_account
            if lake.table_count(r.databases) >= limit:
                raise WriteError(
                    f"the account has {limit} tables, as many as it may have "
                    "(max_tables_per_account)"
                )
        elif not exists:
            raise WriteError(f"table {name} does not exist")
        mark = JobWrite(
            job_id=r.job_id,
            database_name=target.database,
            table_name=target.table,
            rows=_count(r),
            time=int(time.time()),
        )
        deletions: list[Deletion] = []
        if r.kind == "delete" or (r.replace and exists):
            deletions.append(Deletion(target.database, target.table, r.deleted))
        tables: list[TableRows] = []
        if r.rows is not None and r.kind != "delete":
            # The rows' door, for the console (lake/system.py ARRIVALS).
            doors = ((QUERY_DOOR, r.rows.num_rows),) if r.rows.num_rows else ()
            tables.append(
                TableRows(target.database, target.table, r.rows, create_empty=creates, doors=doors)
            )
        return Batch(tables=tables, deletions=deletions, jobs=[mark])


def _count(r: Request) -> int:
    if r.kind == "delete":
        return r.deleted.num_rows if r.deleted is not None else -1
    return r.rows.num_rows if r.rows is not None else 0


def conformed_rows(
    relation: duckdb.DuckDBPyRelation,
    existing: dict[str, str] | None,
    job_time: int,
    max_rows: int,
) -> pa.Table:
    """The relation's rows shaped for a table of ``existing`` columns, as Arrow."""
    name = "tdedge_rows"
    shaped = conform(
        list(relation.columns), [str(t) for t in relation.types], existing, job_time, name
    )
    table = relation.query(name, f"{shaped.sql} LIMIT {int(max_rows) + 1}").to_arrow_table()
    if table.num_rows > max_rows:
        raise WriteError(
            f"a job writes at most {max_rows} rows at once (job_write_max_rows); "
            "split the write into smaller ones"
        )
    if CONFLICTS in table.column_names and table.column(CONFLICTS).null_count == table.num_rows:
        # No row had a conflict: the column is not made for nothing.
        table = table.drop_columns([CONFLICTS])
    return _lake_types(table)


def _lake_types(table: pa.Table) -> pa.Table:
    """Arrow's types for the lake's four (lake/tables.py SQL_TYPES)."""
    wanted = {
        pa.int64(): pa.int64(),
        pa.float64(): pa.float64(),
        pa.bool_(): pa.bool_(),
    }
    fields = [pa.field(f.name, wanted.get(f.type, pa.string())) for f in table.schema]
    return table.cast(pa.schema(fields))
