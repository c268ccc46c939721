"""Tables as TD describes them, read from the DuckLake catalog; and table DDL.

Counts, sizes and dates come from DuckLake's own metadata (record counts and file
sizes it keeps per table, the time of the snapshot that created it, the max of the
``time`` column's statistics) so listing tables never scans data. One read-only
connection per edge worker, used by one thread at a time.

Creating and dropping a table opens a short-lived writable connection: DuckLake lets
several writers commit, one at a time (catalog.write_lock). The loader's cached view
of that table is then stale; its next commit to it fails once, and it reloads the
catalog and commits again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import system
from tdedge.lake.batch import ImportKey
from tdedge.lake.catalog import LAKE, is_conflict, is_locked, retrying, write_lock
from tdedge.lake.connection import open_connection
from tdedge.lake.sql import ident
from tdedge.lake.system import BULK_IMPORTS

META = f"__ducklake_metadata_{LAKE}"
# TD's column type names for the lake's.
TD_TYPES = {"BIGINT": "long", "DOUBLE": "double", "VARCHAR": "string", "BOOLEAN": "boolean"}

_TABLES = f"""
WITH live AS (
    SELECT t.table_id, t.table_name, t.begin_snapshot
    FROM {META}.ducklake_table t JOIN {META}.ducklake_schema s ON s.schema_id = t.schema_id
    WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL AND s.schema_name = ?
)
SELECT
    l.table_id,
    l.table_name,
    (SELECT epoch(CAST(snapshot_time AS TIMESTAMPTZ)) FROM {META}.ducklake_snapshot
     WHERE snapshot_id = l.begin_snapshot) AS created,
    (SELECT max(epoch(CAST(sn.snapshot_time AS TIMESTAMPTZ)))
     FROM {META}.ducklake_data_file f
     JOIN {META}.ducklake_snapshot sn ON sn.snapshot_id = f.begin_snapshot
     WHERE f.table_id = l.table_id) AS updated,
    coalesce(st.record_count, 0),
    coalesce(st.file_size_bytes, 0),
    (SELECT TRY_CAST(cs.max_value AS BIGINT)
     FROM {META}.ducklake_table_column_stats cs
     JOIN {META}.ducklake_column c ON c.column_id = cs.column_id AND c.table_id = cs.table_id
     WHERE cs.table_id = l.table_id AND c.column_name = 'time' AND c.end_snapshot IS NULL
     LIMIT 1) AS max_time
FROM live l LEFT JOIN {META}.ducklake_table_stats st ON st.table_id = l.table_id
ORDER BY l.table_name
"""

_COUNT_TABLES = f"""
SELECT count(*)
FROM {META}.ducklake_table t JOIN {META}.ducklake_schema s ON s.schema_id = t.schema_id
WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL AND list_contains(?, s.schema_name)
"""

_LOADED_RECORDS = (
    f"SELECT coalesce(sum(records), 0) FROM {BULK_IMPORTS} "
    "WHERE account_id = ? AND database_name = ? AND table_name = ? AND unique_id = ?"
)

_COLUMNS = (
    "SELECT table_name, column_name, data_type FROM duckdb_columns() "
    "WHERE database_name = ? AND schema_name = ? ORDER BY table_name, column_index"
)


@dataclass(slots=True)
class TableInfo:
    id: int
    name: str
    created_at: float | None
    updated_at: float | None
    count: int
    size: int
    last_log_time: int | None
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, TD type)


class LakeCatalog:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def tables(self, database: str) -> list[TableInfo]:
        with self._lock:
            rows = self._fetch(_TABLES, [database])
            columns = self._fetch(_COLUMNS, [LAKE, database])
        found = {
            name: TableInfo(int(tid), name, created, updated, int(count), int(size), max_time)
            for tid, name, created, updated, count, size, max_time in rows
        }
        for table, column, kind in columns:
            info = found.get(table)
            if info is not None and column != "time":
                info.columns.append((column, TD_TYPES.get(kind, kind.lower())))
        return list(found.values())

    def table_count(self, databases: list[str]) -> int:
        """How many tables these databases hold."""
        if not databases:
            return 0
        with self._lock:
            rows = self._fetch(_COUNT_TABLES, [databases])
        return int(rows[0][0]) if rows else 0

    def table(self, database: str, name: str) -> TableInfo | None:
        return next((t for t in self.tables(database) if t.name == name), None)

    def loaded_records(self, key: ImportKey) -> int:
        """How many records of the upload ``key`` the loader has loaded (rows and import
        errors alike), as it recorded them in the rows' own commits; 0 before the loader
        made its tables."""
        with self._lock:
            try:
                rows = self._fetch(_LOADED_RECORDS, list(key))
            except LakeError:
                return 0
        return int(rows[0][0]) if rows else 0

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            if self._con is None:
                self._con = open_connection(self._settings, read_only=True)
            try:
                return self._con.execute(sql, params).fetchall()
            except duckdb.Error as e:
                # A reader can go stale (see Lake.query); a fresh one sees the catalog.
                self._con.close()
                self._con = None
                if attempt == 2:
                    raise LakeError(str(e)) from e
        return []

    # DDL, through a writable connection of its own.
    def create_table(self, database: str, name: str) -> None:
        self._ddl(
            [
                f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{ident(database)}",
                f"CREATE TABLE {LAKE}.{ident(database)}.{ident(name)} (time BIGINT)",
            ]
        )

    def drop_table(self, database: str, name: str) -> None:
        self._ddl(
            [
                f"DROP TABLE IF EXISTS {LAKE}.{ident(database)}.{ident(name)}",
                # A table made again under the name counts its doors afresh.
                system.forget_arrivals(database, name),
            ]
        )

    def drop_database(self, database: str) -> None:
        statements = [
            f"DROP TABLE IF EXISTS {LAKE}.{ident(database)}.{ident(t.name)}"
            for t in self.tables(database)
        ]
        statements.append(f"DROP SCHEMA IF EXISTS {LAKE}.{ident(database)}")
        statements.append(system.forget_arrivals(database))
        self._ddl(statements)

    def _ddl(self, statements: list[str]) -> None:
        """Run ``statements`` in one transaction, taking turns with the loader's commits.

        Without the write lock, a commit that overlaps one of the loader's (a batch, or
        its upkeep) can be refused at once with "database is locked", and the caller
        would get a 500 for a table it may make. A refusal for another writer is
        tried again: it changed nothing. On a shared lake a DuckLake conflict with
        another node's commit is too.
        """
        shared = bool(self._settings.lake_catalog)
        retrying(
            lambda: self._ddl_once(statements),
            lambda e: is_locked(e) or (shared and is_conflict(e)),
            "a table change",
        )

    def _ddl_once(self, statements: list[str]) -> None:
        with write_lock(self._settings):
            con = open_connection(self._settings, read_only=False)
            try:
                con.execute("BEGIN")
                for statement in statements:
                    con.execute(statement)
                con.execute("COMMIT")
            except duckdb.Error as e:
                raise LakeError(str(e)) from e
            finally:
                con.close()
