"""An account's share of the lake, for connections that run SQL written by users.

A DuckDB connection can reach everything attached to it: every schema of the lake, the
catalog database DuckLake attaches beside it (``__ducklake_metadata_lake``, which holds
recent rows inline), and, through table functions and quoted paths, every file it may
open. The sqlite extension opens any SQLite file whatever ``enable_external_access``
says, and every store of tdedge's (the catalog, the journal, keys, profiles) is one.
So a query job's connection never attaches the real catalog and never loads that
extension. Its lake is a DuckLake whose catalog is a DuckDB in-memory database holding
the catalog rows of the account's own databases and nothing else — their schemas,
tables, columns, files, statistics and inlined rows — copied in by tdedge through
Python's sqlite3 or psycopg (lake/catalog_source.py), never through DuckDB's
postgres extension either, and it may open only those databases' data folders. Whatever the SQL
says, another account's tables, files and metadata are not there to be named.

A refresh copies from one consistent snapshot of the real catalog (SQLite's WAL mode,
or PostgreSQL's repeatable-read transaction, lets it read while loaders commit), in
one DuckDB transaction, and only when the catalog has a newer snapshot than the copy.
Only the current snapshot is copied: jobs read the present, and older snapshots would
tell when other accounts wrote.

Which catalog table holds what is decided by its columns, so a table a newer DuckLake
adds is never copied by accident: rows keyed by ``table_id`` or ``schema_id`` are
filtered to the account's; ``ducklake_metadata`` and the current ``ducklake_snapshot``
row are copied whole; inlined rows and deletions (``ducklake_inlined_data_<table>_<v>``,
``ducklake_inlined_delete_<table>``) only for the account's tables; every other table
stays empty.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location
from tdedge.lake.catalog import LAKE
from tdedge.lake.catalog_source import Source, open_source
from tdedge.lake.sql import ident, literal

# DuckLake attaches its catalog database under this name beside the lake.
METADATA = f"__ducklake_metadata_{LAKE}"
# The lake's own default schema: always present, holds none of tdedge's tables.
_MAIN = "main"
_INLINED = re.compile(r"ducklake_inlined_(?:data|delete)_(\d+)(?:_\d+)?")
_COPIED_WHOLE = {"ducklake_metadata": "true"}
_CURRENT_ONLY = {
    "ducklake_snapshot": "snapshot_id = (SELECT max(snapshot_id) FROM ducklake_snapshot)"
}
_ROWS = "tdedge_catalog_rows"


class ScopedLake:
    """A DuckLake over ``databases`` of the lake's catalog, for one connection."""

    def __init__(self, settings: Settings, databases: Collection[str]) -> None:
        self.settings = settings
        self.data = location.data_path(settings)
        self.databases = frozenset(databases)
        self._snapshot: int | None = None
        self._inlined: set[str] = set()

    def folders(self) -> list[str]:
        """The folders the databases' files are in, each ending in a slash: a schema's
        folder is its name under the data path (DuckLake's default, kept by tdedge)."""
        return sorted(f"{self.data}{name}/" for name in self.databases)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """ATTACH an empty lake as ``lake`` on ``con``; ``refresh`` fills it."""
        location.configure(con, self.settings)
        try:
            con.execute(f"ATTACH 'ducklake::memory:' AS {LAKE} (DATA_PATH {literal(self.data)})")
        except duckdb.Error as e:
            raise LakeError(f"cannot attach the account's lake: {e}") from e

    def refresh(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Copy the account's share of the catalog's current snapshot into ``con``'s
        lake; False when it held that snapshot already."""
        source = open_source(self.settings)
        try:
            # One read transaction: every table is read from the same snapshot.
            source.begin()
            snapshot = _scalar(source, "SELECT max(snapshot_id) FROM ducklake_snapshot")
            if snapshot is not None and snapshot == self._snapshot:
                return False
            self._copy(source, con)
            self._snapshot = snapshot
            return True
        except source.errors as e:
            raise LakeError(f"cannot read the lake catalog: {e}") from e
        except duckdb.Error as e:
            raise LakeError(f"cannot copy the account's share of the catalog: {e}") from e
        finally:
            source.close()

    def _copy(self, source: Source, con: duckdb.DuckDBPyConnection) -> None:
        names = sorted({_MAIN, *self.databases})
        schema_ids = _ids(
            source,
            "SELECT schema_id FROM ducklake_schema "
            f"WHERE end_snapshot IS NULL AND schema_name IN ({_marks(names)})",
            names,
        )
        table_ids = _ids(
            source,
            f"SELECT table_id FROM ducklake_table WHERE schema_id IN ({_marks(schema_ids)})",
            schema_ids,
        )
        tables = source.tables()
        con.execute("BEGIN")
        try:
            for name in self._inlined:
                con.execute(f"DROP TABLE IF EXISTS {METADATA}.{ident(name)}")
            self._inlined = set()
            for name in tables:
                inlined = _INLINED.fullmatch(name)
                if inlined is None:
                    where = _filter(source, name, schema_ids, table_ids)
                    con.execute(f"DELETE FROM {METADATA}.{ident(name)}")
                elif int(inlined.group(1)) in table_ids:
                    # Left out whole for other tables: even the name tells one exists.
                    create_like(source, con, name)
                    self._inlined.add(name)
                    where = "true"
                else:
                    continue
                if where is not None:
                    _insert(source, con, name, where)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _filter(
    source: Source, name: str, schema_ids: Sequence[int], table_ids: Sequence[int]
) -> str | None:
    """The WHERE clause choosing the account's rows of a catalog table; None: none."""
    if name in _COPIED_WHOLE:
        return _COPIED_WHOLE[name]
    if name in _CURRENT_ONLY:
        return _CURRENT_ONLY[name]
    columns = {column for column, _ in source.columns(name)}
    if "table_id" in columns:
        # Schema versions of the whole catalog carry no table.
        everywhere = " OR table_id IS NULL" if name == "ducklake_schema_versions" else ""
        return f"table_id IN ({_listed(table_ids)}){everywhere}"
    if "schema_id" in columns:
        return f"schema_id IN ({_listed(schema_ids)})"
    return None


def create_like(source: Source, con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Create an inlined-data table in the copy with its columns' own types.

    A SQLite catalog keeps inlined values in the types SQLite has (a BOOLEAN as an
    integer, a DOUBLE as text); a DuckDB catalog keeps them as they are, and DuckLake
    reads them so. The types are the table's columns at the table's schema version.
    """
    columns = source.columns(name)
    inlined = _INLINED.fullmatch(name)
    if inlined is not None and name.startswith("ducklake_inlined_data_"):
        # row_id, begin_snapshot, end_snapshot, then the table's own columns.
        version = int(name.rsplit("_", 1)[1])
        types = _column_types(source, int(inlined.group(1)), version)
        columns[3:] = [(column, types.get(column, kind)) for column, kind in columns[3:]]
    listed = ", ".join(f"{ident(column)} {kind}" for column, kind in columns)
    con.execute(f"CREATE TABLE {METADATA}.{ident(name)} ({listed})")


def _column_types(source: Source, table_id: int, version: int) -> dict[str, str]:
    """DuckDB types of a table's top-level columns at a schema version (the newest of
    each name when the version's snapshot is not known)."""
    found = source.select(
        "SELECT min(begin_snapshot) FROM ducklake_schema_versions WHERE schema_version = ?",
        [version],
    )[1]
    began = found[0][0] if found else None
    rows = source.select(
        "SELECT column_name, column_type, begin_snapshot, end_snapshot FROM ducklake_column "
        "WHERE table_id = ? AND parent_column IS NULL ORDER BY begin_snapshot",
        [table_id],
    )[1]
    types: dict[str, str] = {}
    for column, kind, begin, end in rows:
        if began is None or (begin <= began and (end is None or end > began)):
            types[column] = _duckdb_type(str(kind))
    return types


# DuckLake's type names (its specification) as DuckDB spells them.
_TYPES = {
    "boolean": "BOOLEAN",
    "int8": "TINYINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "uint8": "UTINYINT",
    "uint16": "USMALLINT",
    "uint32": "UINTEGER",
    "uint64": "UBIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "varchar": "VARCHAR",
    "blob": "BLOB",
    "json": "JSON",
    "uuid": "UUID",
    "date": "DATE",
    "time": "TIME",
    "timetz": "TIMETZ",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "timestamp_s": "TIMESTAMP_S",
    "timestamp_ms": "TIMESTAMP_MS",
    "timestamp_ns": "TIMESTAMP_NS",
    "interval": "INTERVAL",
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")


def _duckdb_type(kind: str) -> str:
    decimal = _DECIMAL.fullmatch(kind.lower())
    if decimal is not None:
        return f"DECIMAL({int(decimal.group(1))}, {int(decimal.group(2))})"
    found = _TYPES.get(kind.lower())
    if found is None:
        # A wrong type would read as NULLs without an error: refuse instead.
        raise LakeError(f"query jobs cannot read inlined columns of type {kind}")
    return found


def _insert(source: Source, con: duckdb.DuckDBPyConnection, name: str, where: str) -> None:
    columns, rows = source.select(f"SELECT * FROM {ident(name)} WHERE {where}")
    if not rows:
        return
    table = pa.table({c: arrow_column([r[i] for r in rows]) for i, c in enumerate(columns)})
    con.register(_ROWS, table)
    try:
        # DuckDB casts to the column types DuckLake created (text to timestamps too).
        con.execute(f"INSERT INTO {METADATA}.{ident(name)} BY NAME SELECT * FROM {_ROWS}")
    finally:
        con.unregister(_ROWS)


def arrow_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # SQLite keeps any value in any column: mixed ones go as text and are cast.
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _ids(source: Source, sql: str, params: Sequence[Any]) -> list[int]:
    return [int(row[0]) for row in source.select(sql, params)[1]]


def _scalar(source: Source, sql: str) -> int | None:
    rows = source.select(sql)[1]
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values)) or "NULL"


def _listed(ids: Sequence[int]) -> str:
    return ", ".join(str(int(i)) for i in ids) or "NULL"
