"""The lake's DuckLake catalog, copied from its SQLite file into PostgreSQL whole: every
snapshot, schema, table, column, data and delete file, statistic and inlined row, so
time travel reaches as far back after the move as before it.

DuckLake 1.5.5 has no statement for this: its guides copy a catalog only between two
catalogs of one kind (``COPY FROM DATABASE`` of a DuckDB catalog, or the database's
own dump). So DuckLake itself creates the new catalog, at its own version, by being
attached to the empty PostgreSQL database with the new data path; then, in one
transaction, the rows it made there are replaced by the source's, table by table (the
way query jobs copy their share of a catalog, lake/scope.py), each inlined-data table
created with its columns' own types; and the data path is set to the new one. File
paths stay as they are: DuckLake keeps them relative to the data path, and the files
keep theirs under the new one (objects.py).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location
from tdedge.lake.catalog import LAKE, META
from tdedge.lake.catalog_source import PostgresSource, SQLiteSource
from tdedge.lake.extensions import connect
from tdedge.lake.scope import arrow_column, create_like
from tdedge.lake.sql import ident, literal
from tdedge.migration.snapshot import MigrationError

_ROWS = "tdedge_migrated_rows"
# Rows inserted per statement: bounds the memory a large inlined table takes.
_CHUNK = 10_000
# Tables DuckLake makes per table for its inlined rows and deletions (not the
# ducklake_inlined_data_tables that lists them).
_INLINED = re.compile(r"ducklake_inlined_(?:data|delete)_\d+(?:_\d+)?")
# A snapshot as both catalogs give it back (times differ in type between the two).
_SNAPSHOTS = (
    "SELECT snapshot_id, schema_version, next_catalog_id, next_file_id "
    "FROM ducklake_snapshot ORDER BY snapshot_id"
)

Snapshot = tuple[int, int, int, int]


def source_snapshots(staged: Settings) -> list[Snapshot]:
    """The snapshots of the staged (copied) SQLite catalog; [] when it was never made."""
    path = staged.lake_catalog_file
    if not path.is_file():
        return []
    con = sqlite3.connect(path)
    try:
        made = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'ducklake_snapshot'"
        ).fetchone()
        if not made or not made[0]:
            return []
        return [_snapshot(row) for row in con.execute(_SNAPSHOTS)]
    finally:
        con.close()


def target_snapshots(target: Settings) -> list[Snapshot] | None:
    """The snapshots of the PostgreSQL catalog; None when it holds no DuckLake."""
    try:
        source = PostgresSource(location.postgres_dsn(target.lake_catalog))
    except LakeError as e:
        raise MigrationError(str(e)) from e
    try:
        if "ducklake_snapshot" not in source.tables():
            return None
        return [_snapshot(row) for row in source.select(_SNAPSHOTS)[1]]
    except source.errors as e:
        raise MigrationError(f"cannot read the target lake catalog: {e}") from e
    finally:
        source.close()


def _snapshot(row: Any) -> Snapshot:
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def is_fresh(snapshots: list[Snapshot] | None) -> bool:
    """Whether a catalog holds nothing: none at all, or only the first snapshot DuckLake
    makes when it is attached to an empty database (a run stopped before its copy)."""
    return snapshots is None or [s[0] for s in snapshots] == [0]


def copy_catalog(staged: Settings, target: Settings) -> dict[str, int]:
    """Copy the staged SQLite catalog into the target's PostgreSQL one (fresh); the rows
    copied per catalog table."""
    sqlite_source = SQLiteSource(str(staged.lake_catalog_file.resolve()))
    src = sqlite3.connect(f"file:{staged.lake_catalog_file.resolve()}?mode=ro", uri=True)
    con = connect(location.extensions(target))
    counts: dict[str, int] = {}
    try:
        location.configure(con, target)
        data = location.data_path(target)
        con.execute(
            f"ATTACH {literal(location.catalog_source(target))} AS {LAKE} "
            f"(DATA_PATH {literal(data)})"
        )
        made = _made_tables(target)
        _same_version(con, staged)
        tables = sqlite_source.tables()
        con.execute("BEGIN")
        try:
            for name in made:
                con.execute(f"DELETE FROM {META}.{ident(name)}")
            for name in tables:
                if _INLINED.fullmatch(name):
                    if name in made:
                        raise MigrationError(f"the new catalog already holds {name}")
                    create_like(sqlite_source, con, name)
                elif name not in made:
                    raise MigrationError(
                        f"the lake catalog has a table {name} that this DuckLake does not "
                        "make: it was written by another DuckLake version"
                    )
                counts[name] = _insert(src, con, name)
            con.execute(
                f"UPDATE {META}.ducklake_metadata SET value = ? "
                "WHERE key = 'data_path' AND scope IS NULL",
                [data],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except duckdb.Error as e:
        raise MigrationError(f"cannot copy the lake catalog: {e}") from e
    except LakeError as e:
        raise MigrationError(str(e)) from e
    finally:
        con.close()
        src.close()
        sqlite_source.close()
    return counts


def _made_tables(target: Settings) -> list[str]:
    """The catalog tables DuckLake made in the target database."""
    source = PostgresSource(location.postgres_dsn(target.lake_catalog))
    try:
        return source.tables()
    except source.errors as e:
        raise MigrationError(f"cannot read the target lake catalog: {e}") from e
    finally:
        source.close()


def _insert(src: sqlite3.Connection, con: duckdb.DuckDBPyConnection, name: str) -> int:
    total = 0
    for columns, rows in _chunks(src, name):
        table = pa.table({c: arrow_column([r[i] for r in rows]) for i, c in enumerate(columns)})
        con.register(_ROWS, table)
        try:
            # DuckDB casts to the column types DuckLake made (text to timestamps too).
            con.execute(f"INSERT INTO {META}.{ident(name)} BY NAME SELECT * FROM {_ROWS}")
        finally:
            con.unregister(_ROWS)
        total += len(rows)
    return total


def _chunks(src: sqlite3.Connection, name: str) -> Iterator[tuple[list[str], list[Any]]]:
    cursor = src.execute(f"SELECT * FROM {ident(name)}")
    columns = [d[0] for d in cursor.description or ()]
    while rows := cursor.fetchmany(_CHUNK):
        yield columns, rows


_VERSION = "SELECT value FROM {}ducklake_metadata WHERE key = 'version' AND scope IS NULL"


def _same_version(con: duckdb.DuckDBPyConnection, staged: Settings) -> None:
    """Refuse a source catalog of another DuckLake format version than the one this
    DuckLake made: its rows would not fit the new catalog's tables."""
    made = con.execute(_VERSION.format(f"{META}.")).fetchone()
    src = sqlite3.connect(f"file:{staged.lake_catalog_file.resolve()}?mode=ro", uri=True)
    try:
        found = src.execute(_VERSION.format("")).fetchone()
    finally:
        src.close()
    if made is None or found is None or str(made[0]) != str(found[0]):
        raise MigrationError(
            f"the data dir's lake is at DuckLake format {found and found[0]}, this tdedge "
            f"makes {made and made[0]}: its rows do not fit the new catalog, nothing was "
            "copied"
        )
