"""Reading the lake's catalog database directly, outside DuckDB, for the per-job scoped
catalog (lake/scope.py): SQLite through Python's sqlite3, PostgreSQL through psycopg.

Both answer the same few questions in one read transaction, so the copy sees one
snapshot: the catalog's tables, a table's columns with DuckDB type names, and rows of
a query written with ``?`` placeholders in SQL both databases speak.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location
from tdedge.lake.sql import ident

Rows = list[tuple[Any, ...]]


class Source(Protocol):
    # The exceptions a read may raise, for callers to turn into LakeError.
    errors: tuple[type[Exception], ...]

    def begin(self) -> None: ...

    def tables(self) -> list[str]:
        """The names of the catalog's tables that start with ``ducklake``."""
        ...

    def columns(self, table: str) -> list[tuple[str, str]]:
        """A table's columns and their types, as DuckDB names them."""
        ...

    def select(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], Rows]: ...

    def close(self) -> None: ...


def open_source(settings: Settings) -> Source:
    if settings.lake_catalog_postgres:
        return PostgresSource(location.postgres_dsn(settings.lake_catalog))
    return SQLiteSource(str(settings.lake_catalog_file.resolve()))


class SQLiteSource:
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str) -> None:
        try:
            self._con = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30
            )
        except sqlite3.Error as e:
            raise LakeError(f"cannot read the lake catalog {path}: {e}") from e

    def begin(self) -> None:
        self._con.execute("BEGIN")

    def tables(self) -> list[str]:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ducklake%'"
        return [str(name) for (name,) in self._con.execute(sql)]

    def columns(self, table: str) -> list[tuple[str, str]]:
        found = self._con.execute(f"PRAGMA table_info({ident(table)})")
        return [(str(c[1]), str(c[2] or "VARCHAR")) for c in found]

    def select(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], Rows]:
        cursor = self._con.execute(sql, list(params))
        rows = cursor.fetchall()
        return [d[0] for d in cursor.description or ()], rows

    def close(self) -> None:
        self._con.close()


# PostgreSQL's type names (information_schema's data_type) as DuckDB spells them; any
# other is read as text, which DuckDB casts to the column type DuckLake created.
_PG_TYPES = {
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "smallint": "SMALLINT",
    "boolean": "BOOLEAN",
    "double precision": "DOUBLE",
    "real": "FLOAT",
    "text": "VARCHAR",
    "character varying": "VARCHAR",
    "bytea": "BLOB",
    "date": "DATE",
    "uuid": "UUID",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "time without time zone": "TIME",
    "interval": "INTERVAL",
    "numeric": "DOUBLE",
}


class PostgresSource:
    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as e:
            raise LakeError(
                "a PostgreSQL lake catalog needs psycopg: pip install 'tdedge[postgresql]'"
            ) from e
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        try:
            self._con = psycopg.connect(dsn, connect_timeout=30)
        except psycopg.Error as e:
            raise LakeError(f"cannot read the lake catalog: {e}") from e

    def begin(self) -> None:
        # psycopg opened a transaction; make it one snapshot for every statement.
        self._con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def tables(self) -> list[str]:
        rows = self._con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name LIKE 'ducklake%%' "
            "ORDER BY table_name"
        ).fetchall()
        return [str(name) for (name,) in rows]

    def columns(self, table: str) -> list[tuple[str, str]]:
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return [(str(name), _PG_TYPES.get(str(kind), "VARCHAR")) for name, kind in rows]

    def select(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], Rows]:
        # The callers' SQL holds no literal % or ?, only placeholders.
        cursor = self._con.execute(sql.replace("?", "%s"), list(params))
        rows = cursor.fetchall()
        return [d.name for d in cursor.description or ()], rows

    def close(self) -> None:
        self._con.close()
