"""The tables tdedge keeps for itself in the ``tdedge_system`` schema of the lake.

``journal_positions`` is append-only: each commit adds one row per shard it moved, and
the position of a shard is its largest ``seq``. An upsert would need a DELETE in every
commit, which here costs more than the insert of the rows themselves (~16 ms per
commit); compaction deletes the superseded rows instead.

``bulk_imports`` holds each ``import_with_id`` upload the loader has loaded, keyed by
(account_id, database_name, table_name, unique_id), written in the same transaction as
its rows: the loader looks new uploads up in it and drops repeats (loader/imports.py).
Compaction deletes rows older than ``bulk_import_retention_s`` and no others. Rows
written before ``account_id`` and ``attempt`` existed have them NULL: such a row
stands for its key in every account until it expires, which errs towards dropping a
retry rather than loading it twice.

``load_marks`` says which tables' rows of journal entries past the positions are loaded
already (lake/batch.py LoadMark); it is empty but while the loader sets a table aside.
Compaction deletes the marks the positions have passed.

``job_writes`` has a row for each query job that wrote into a table (lake/batch.py
JobWrite), written with its rows: a job is never written twice.

``arrivals`` says which door each commit's rows came in by, written with them: per
commit, per table, one row per run of rows of one door, in row order (``first_row``
is the run's place among the rows the commit inserted into the table, from 0). The
console (lake/feed.py) joins it to the rows by the snapshot DuckLake gives both, and
sums it per door. It is one small insert per commit, never a column of users' tables
(they SELECT * them, and Treasure Data's tables have no such column). Compaction
rolls the rows whose snapshots have expired into one per (table, door), ``first_row``
NULL, so the table stays about as small as the commits the lake keeps; a dropped table's rows go
with it (api/catalog.py).

``upgrades`` names each change made to a lake an older tdedge made (lake/upgrades.py),
with its time: one row per upgrade, written with its changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import pyarrow as pa

from tdedge.lake.batch import BulkImport, ImportKey, JobWrite, LoadMark, Rejection, TableRows
from tdedge.lake.catalog import LAKE
from tdedge.lake.sql import literal, table_ref
from tdedge.names import SYSTEM_DATABASE

POSITIONS = table_ref(LAKE, SYSTEM_DATABASE, "journal_positions")
IMPORT_ERRORS = table_ref(LAKE, SYSTEM_DATABASE, "import_errors")
BULK_IMPORTS = table_ref(LAKE, SYSTEM_DATABASE, "bulk_imports")
LOAD_MARKS = table_ref(LAKE, SYSTEM_DATABASE, "load_marks")
UPGRADES = table_ref(LAKE, SYSTEM_DATABASE, "upgrades")
JOB_WRITES = table_ref(LAKE, SYSTEM_DATABASE, "job_writes")
ARRIVALS_NAME = "arrivals"
ARRIVALS = table_ref(LAKE, SYSTEM_DATABASE, ARRIVALS_NAME)

IMPORT_ERRORS_SCHEMA = pa.schema(
    [
        ("time", pa.int64()),
        ("received_ms", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("door", pa.string()),
        ("database_name", pa.string()),
        ("table_name", pa.string()),
        ("key_id", pa.string()),
        ("account_id", pa.int64()),
        ("record", pa.string()),
        ("journal_shard", pa.string()),
        ("journal_seq", pa.int64()),
    ]
)

BULK_IMPORTS_SCHEMA = pa.schema(
    [
        ("database_name", pa.string()),
        ("table_name", pa.string()),
        ("unique_id", pa.string()),
        ("records", pa.int64()),
        ("journal_shard", pa.string()),
        ("journal_seq", pa.int64()),
        ("time", pa.int64()),
        # Last, as the columns added to lakes made before them (BULK_IMPORTS_COLUMNS).
        ("account_id", pa.int64()),
        ("attempt", pa.string()),
    ]
)
IMPORT_KEYS_SCHEMA = pa.schema(
    [
        ("account_id", pa.int64()),
        ("database_name", pa.string()),
        ("table_name", pa.string()),
        ("unique_id", pa.string()),
    ]
)

POSITIONS_SCHEMA = pa.schema([("shard", pa.string()), ("seq", pa.int64())])

LOAD_MARKS_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("seq", pa.int64()),
        ("database_name", pa.string()),
        ("table_name", pa.string()),
        ("time", pa.int64()),
    ]
)

UPGRADES_SCHEMA = pa.schema([("name", pa.string()), ("time", pa.int64())])

JOB_WRITES_SCHEMA = pa.schema(
    [
        ("job_id", pa.int64()),
        ("database_name", pa.string()),
        ("table_name", pa.string()),
        ("rows", pa.int64()),
        ("time", pa.int64()),
    ]
)

ARRIVALS_SCHEMA = pa.schema(
    [
        ("database_name", pa.string()),
        ("table_name", pa.string()),
        ("door", pa.string()),
        ("first_row", pa.int64()),
        ("rows", pa.int64()),
        ("time", pa.int64()),
    ]
)

_SQL = {pa.int64(): "BIGINT", pa.string(): "VARCHAR"}


def _columns_sql(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} {_SQL[f.type]}" for f in schema)


DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{SYSTEM_DATABASE}",
    f"CREATE TABLE IF NOT EXISTS {POSITIONS} ({_columns_sql(POSITIONS_SCHEMA)})",
    f"CREATE TABLE IF NOT EXISTS {IMPORT_ERRORS} ({_columns_sql(IMPORT_ERRORS_SCHEMA)})",
    f"CREATE TABLE IF NOT EXISTS {BULK_IMPORTS} ({_columns_sql(BULK_IMPORTS_SCHEMA)})",
    f"CREATE TABLE IF NOT EXISTS {LOAD_MARKS} ({_columns_sql(LOAD_MARKS_SCHEMA)})",
    f"CREATE TABLE IF NOT EXISTS {UPGRADES} ({_columns_sql(UPGRADES_SCHEMA)})",
    f"CREATE TABLE IF NOT EXISTS {JOB_WRITES} ({_columns_sql(JOB_WRITES_SCHEMA)})",
    # Created in lakes made before it, too: they show no door for their older rows.
    f"CREATE TABLE IF NOT EXISTS {ARRIVALS} ({_columns_sql(ARRIVALS_SCHEMA)})",
    # Lakes made before these columns get them, NULL in their old rows.
    *(
        f"ALTER TABLE {BULK_IMPORTS} ADD COLUMN IF NOT EXISTS {f.name} {_SQL[f.type]}"
        for f in BULK_IMPORTS_SCHEMA
        if f.name in ("account_id", "attempt")
    ),
)

TABLES = (POSITIONS, IMPORT_ERRORS, BULK_IMPORTS, LOAD_MARKS, UPGRADES, JOB_WRITES, ARRIVALS)

WRITTEN_JOBS = f"SELECT DISTINCT job_id FROM {JOB_WRITES} WHERE job_id IN (SELECT unnest(?))"

READ_POSITIONS = f"SELECT shard, max(seq) FROM {POSITIONS} GROUP BY shard"
# The positions of some shards only (the list is the parameter).
READ_SHARD_POSITIONS = (
    f"SELECT shard, max(seq) FROM {POSITIONS} WHERE shard IN (SELECT unnest(?)) GROUP BY shard"
)

# Keeps the newest row of each shard (see the module docstring).
PRUNE_POSITIONS = (
    f"DELETE FROM {POSITIONS} AS p "
    f"WHERE p.seq < (SELECT max(q.seq) FROM {POSITIONS} AS q WHERE q.shard = p.shard)"
)
COUNT_POSITIONS = f"SELECT count(*), count(DISTINCT shard) FROM {POSITIONS}"

# The marks of each table and shard, the newest only: a mark's seq is the last entry
# it covers, and entries are covered from the position up.
READ_MARKS = (
    f"SELECT database_name, table_name, shard, max(seq) FROM {LOAD_MARKS} "
    "GROUP BY database_name, table_name, shard"
)
# Marks the positions have passed (see the module docstring); counted first.
_PASSED_MARKS = (
    f"FROM {LOAD_MARKS} AS m WHERE m.seq <= "
    f"(SELECT max(p.seq) FROM {POSITIONS} AS p WHERE p.shard = m.shard)"
)
COUNT_PASSED_MARKS = f"SELECT count(*) {_PASSED_MARKS}"
PRUNE_MARKS = f"DELETE {_PASSED_MARKS}"

# Bulk-import ids past their retention (Settings.bulk_import_retention_s); counted
# first, as a DELETE that matches nothing still costs a commit.
COUNT_EXPIRED_IMPORTS = f"SELECT count(*) FROM {BULK_IMPORTS} WHERE time < ?"
EXPIRE_IMPORTS = f"DELETE FROM {BULK_IMPORTS} WHERE time < ?"


# Rows of each table and door, for the console; the tables are filtered by the caller.
DOOR_COUNTS = (
    f"SELECT database_name, table_name, door, sum(rows) FROM {ARRIVALS} "
    "GROUP BY database_name, table_name, door"
)
# Arrival rows whose snapshots have expired (their place among a commit's rows serves
# no feed any more) beyond one per table and door: ROLL_UP_ARRIVALS sums them into one
# row per table and door, timed at the cutoff (so that the DELETE in the same
# transaction spares it), once there are this many to save.
ROLL_UP_ARRIVALS_AFTER = 1_000
_OLD_ARRIVALS = f"FROM {ARRIVALS} WHERE time < ?"
COUNT_OLD_ARRIVALS = (
    f"SELECT count(*) - count(DISTINCT (database_name, table_name, door)) {_OLD_ARRIVALS}"
)
ROLL_UP_ARRIVALS = (
    f"INSERT INTO {ARRIVALS} SELECT database_name, table_name, door, NULL, sum(rows), "
    f"CAST(? AS BIGINT) {_OLD_ARRIVALS} GROUP BY database_name, table_name, door",
    f"DELETE {_OLD_ARRIVALS}",
)


def forget_arrivals(database: str, table: str | None = None) -> str:
    """The statement that forgets a dropped table's (or database's) arrivals."""
    where = f"database_name = {literal(database)}"
    if table is not None:
        where += f" AND table_name = {literal(table)}"
    return f"DELETE FROM {ARRIVALS} WHERE {where}"


def insert_arrivals(tables: Iterable[TableRows], now: int) -> str | None:
    """The statement that records a commit's door runs (see the module docstring); None
    when no table records its doors. One INSERT of literal rows: through an Arrow view
    it costs the commit several times more."""
    values = []
    for t in tables:
        if not t.doors or not t.rows.num_rows:
            continue
        first = 0
        for door, rows in t.doors:
            names = f"{literal(t.database)}, {literal(t.table)}, {literal(door)}"
            values.append(f"({names}, {first}, {int(rows)}, {int(now)})")
            first += rows
    if not values:
        return None
    return f"INSERT INTO {ARRIVALS} VALUES {', '.join(values)}"


def _rows_table(rows: Sequence[msgspec.Struct], schema: pa.Schema) -> pa.Table:
    """Structs whose fields are ``schema``'s columns, as one Arrow table."""
    columns: dict[str, list[object]] = {name: [] for name in schema.names}
    for row in rows:
        for name, value in msgspec.structs.asdict(row).items():
            columns[name].append(value)
    return pa.table(columns, schema=schema)


def rejections_table(rejections: Sequence[Rejection]) -> pa.Table:
    return _rows_table(rejections, IMPORT_ERRORS_SCHEMA)


def loaded_imports_sql(keys: str) -> str:
    """Which keys of the relation ``keys`` are loaded, with the upload token of each (a
    row from before accounts were recorded matches its key in every account)."""
    return (
        f"SELECT DISTINCT k.account_id, k.database_name, k.table_name, k.unique_id, b.attempt "
        f"FROM {keys} AS k JOIN {BULK_IMPORTS} AS b "
        "USING (database_name, table_name, unique_id) "
        "WHERE b.account_id = k.account_id OR b.account_id IS NULL"
    )


def loaded_imports(rows: Iterable[tuple[Any, ...]]) -> dict[ImportKey, str | None]:
    """``loaded_imports_sql``'s rows: each key and the token its upload carried (None
    for an upload from before tokens)."""
    return {(int(a), str(d), str(t), str(u)): attempt for a, d, t, u, attempt in rows}


def import_keys_table(keys: Iterable[ImportKey]) -> pa.Table:
    found = list(keys)
    columns = {name: [key[i] for key in found] for i, name in enumerate(IMPORT_KEYS_SCHEMA.names)}
    return pa.table(columns, schema=IMPORT_KEYS_SCHEMA)


def bulk_imports_table(imports: Sequence[BulkImport]) -> pa.Table:
    return _rows_table(imports, BULK_IMPORTS_SCHEMA)


def positions_table(positions: Mapping[str, int]) -> pa.Table:
    return pa.table(
        {"shard": list(positions), "seq": list(positions.values())}, schema=POSITIONS_SCHEMA
    )


def marks_table(marks: Sequence[LoadMark]) -> pa.Table:
    return _rows_table(marks, LOAD_MARKS_SCHEMA)


def job_writes_table(jobs: Sequence[JobWrite]) -> pa.Table:
    return _rows_table(jobs, JOB_WRITES_SCHEMA)
