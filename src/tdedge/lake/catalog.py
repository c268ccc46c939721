"""The lake's catalog: a DuckLake whose metadata is one SQLite file (or a PostgreSQL
database, lake/location.py), data local Parquet (or on S3).

The loader attaches it read-write; ``tdedge query`` and the REST job API attach it
read-only from other processes at the same time. The SQLite file is put in WAL mode
before DuckDB ever opens it: with the rollback journal a concurrent reader blocks the
writer (about 1 commit/s instead of ~26 here, see reference/measurements.md).

Writers in several processes (the loader, ``tdedge db create``) may commit at the same
moment. DuckLake retries a commit whose snapshot moved when the changes do not touch
the same objects (``ducklake_max_retry_count``, default 10 with backoff): enough for
tdedge's one-loader design, so those defaults are kept. SQLite itself can refuse a
commit at once with "database is locked" when two writers upgrade their read
transactions (duckdb/ducklake#1309, not covered by the busy timeout); Lake retries
those (see Lake.commit).
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb

from tdedge import wal
from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location
from tdedge.lake.inlining import set_row_limit
from tdedge.lake.sql import literal

log = logging.getLogger("tdedge.lake")

# The name the lake is attached under in every tdedge connection.
LAKE = "lake"
# DuckLake attaches its catalog database under this name. Listing tables from it costs
# one query; duckdb_tables() asks DuckLake about each table (seconds with 300 tables).
META = f"__ducklake_metadata_{LAKE}"
# The live tables of one schema, from the catalog database itself.
LIVE_TABLES = f"""
SELECT t.table_name
FROM {META}.ducklake_table t JOIN {META}.ducklake_schema s ON s.schema_id = t.schema_id
WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL AND s.schema_name = ?
ORDER BY t.table_name
"""
BUSY_TIMEOUT_MS = 5000


def prepare_catalog(path: Path) -> None:
    """Create the catalog file (and its folder) in WAL mode; a no-op when it already is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(path)
        try:
            (mode,) = con.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                wal.enter(con)
        finally:
            con.close()
    except sqlite3.Error as e:
        raise LakeError(f"cannot prepare the lake catalog {path}: {e}") from e


def attach(con: duckdb.DuckDBPyConnection, settings: Settings, *, read_only: bool) -> None:
    """ATTACH the lake as ``lake`` on ``con`` (loaded with location.extensions)."""
    location.prepare_data(settings)
    location.configure(con, settings)
    # Wait for another process's catalog write instead of failing at once.
    options = [f"DATA_PATH {literal(location.data_path(settings))}"]
    if not settings.lake_catalog_postgres:
        options.append(f"META_BUSY_TIMEOUT {BUSY_TIMEOUT_MS}")
    if read_only:
        options.append("READ_ONLY")
    source = literal(location.catalog_source(settings))
    try:
        con.execute(f"ATTACH {source} AS {LAKE} ({', '.join(options)})")
        if not read_only:
            # A session setting, not the DATA_INLINING_ROW_LIMIT option, which would take
            # precedence over it: the lake turns inlining off for some inserts (inlining.py).
            set_row_limit(con, settings.lake_inlining_row_limit)
    except duckdb.Error as e:
        name = location.catalog_name(settings)
        raise LakeError(f"cannot attach the lake at {name}: {e}") from e


def sandbox(con: duckdb.DuckDBPyConnection, allowed: Sequence[str]) -> None:
    """Confine a connection that runs SQL written by users to the ``allowed`` folders
    (ending in a slash) and files.

    After this, SQL run on ``con`` cannot read or write other files through DuckDB
    (read_csv of /etc/passwd, COPY TO, ATTACH) and cannot turn the restriction off
    again. Extensions that open files themselves are not covered: see lake/scope.py.
    """
    listed = ", ".join(literal(a) for a in allowed)
    try:
        con.execute(f"SET allowed_directories = [{listed}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as e:
        raise LakeError(f"cannot restrict the query connection: {e}") from e


def lake_files(settings: Settings) -> list[str]:
    """Every file of the lake: what the operator's ``tdedge query`` may read."""
    files = [location.data_path(settings)]
    if not settings.lake_catalog_postgres:
        files.append(str(settings.lake_catalog_file.resolve()))
    return files


@contextmanager
def write_lock(settings: Settings) -> Iterator[None]:
    """Serialise the transactions that write rows (the loader's batches, query jobs'
    writes) across processes.

    Two such transactions that overlap in time make the later COMMIT fail with
    "database is locked" (duckdb/ducklake#1309) whatever tables they touch, and a
    job's write can take seconds: the loader would retry into its set-aside path.
    One at a time, neither ever fails for the other; the other waits.
    """
    with _file_lock(settings.lake_locks / ".write.lock"):
        yield


# Retries of a catalog write refused because another writer holds the catalog (SQLite's
# lock, or a DuckLake conflict on a shared lake): about 4.5 s in all.
LOCK_RETRIES = 8
LOCK_BACKOFF_S = 0.05
LOCK_BACKOFF_MAX_S = 1.0


def is_locked(error: BaseException) -> bool:
    """SQLite refused a write because another process holds the catalog."""
    return "database is locked" in str(error)


def is_conflict(error: BaseException) -> bool:
    """DuckLake refused the commit: another transaction changed what it changed."""
    return "Transaction conflict" in str(error)


def backoff(attempt: int) -> float:
    return float(min(LOCK_BACKOFF_MAX_S, LOCK_BACKOFF_S * 2**attempt))


def retrying(action: Callable[[], None], busy: Callable[[LakeError], bool], what: str) -> None:
    """Run a catalog write that a refusal leaves undone, again while ``busy`` says the
    refusal was for another writer (with backoff, ``LOCK_RETRIES`` times)."""
    for attempt in range(LOCK_RETRIES + 1):
        try:
            action()
            return
        except LakeError as e:
            if not busy(e) or attempt >= LOCK_RETRIES:
                raise
        log.info("lake catalog busy with another writer; retrying %s", what)
        time.sleep(backoff(attempt))


@contextmanager
def init_lock(settings: Settings) -> Iterator[None]:
    """Serialise first-time set-up across processes (two creators would conflict), and
    across nodes for a PostgreSQL catalog: two nodes making DuckLake's tables at once
    fail ("duplicate key value violates unique constraint")."""
    with _file_lock(settings.lake_locks / ".init.lock"):
        if settings.lake_catalog_postgres:
            with _advisory_lock(location.postgres_dsn(settings.lake_catalog)):
                yield
        else:
            yield


# The PostgreSQL advisory lock the lake's set-up holds (any number: tdedge's own).
_INIT_LOCK_KEY = 0x7464656467650001


@contextmanager
def _advisory_lock(dsn: str) -> Iterator[None]:
    """Hold a session-level advisory lock on the catalog's database; it goes with the
    connection, so a process that dies holding it frees it."""
    try:
        import psycopg
    except ImportError as e:
        raise LakeError(
            "a PostgreSQL lake catalog needs psycopg: pip install 'tdedge[lake-cluster]'"
        ) from e
    try:
        con = psycopg.connect(dsn, autocommit=True, connect_timeout=30)
    except psycopg.Error as e:
        raise LakeError(f"cannot reach the lake catalog: {e}") from e
    try:
        con.execute("SELECT pg_advisory_lock(%s)", [_INIT_LOCK_KEY])
        yield
    finally:
        con.close()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
