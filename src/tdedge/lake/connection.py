"""Opening a DuckDB connection with the lake attached, setting the lake up on first use.

A writer creates the catalog (in WAL mode) and tdedge's system tables under a file
lock, so two processes starting at once do not both create them. A reader that finds
no lake yet sets one up the same way first: ``tdedge query`` on a fresh data dir works.
"""

from __future__ import annotations

import logging

import duckdb

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location, system
from tdedge.lake.catalog import (
    LAKE,
    LIVE_TABLES,
    attach,
    init_lock,
    lake_files,
    prepare_catalog,
    sandbox,
)
from tdedge.lake.extensions import connect
from tdedge.names import SYSTEM_DATABASE

log = logging.getLogger("tdedge.lake")


def open_connection(settings: Settings, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection with the lake attached as ``lake`` and in use (``USE lake``).

    Read-only connections are sandboxed to the lake's files (catalog.sandbox): they run
    the operator's SQL. Query jobs, which run SQL from accounts, see only their own
    share of the lake instead (lake/scope.py).
    """
    if not read_only:
        return _writable(settings)
    if not _initialised(settings):
        _writable(settings).close()
    con = connect(location.extensions(settings))
    try:
        attach(con, settings, read_only=True)
        sandbox(con, lake_files(settings))
        con.execute(f"USE {LAKE}")
    except duckdb.Error as e:
        con.close()
        raise LakeError(f"cannot open the lake: {e}") from e
    except BaseException:
        con.close()
        raise
    return con


def _writable(settings: Settings) -> duckdb.DuckDBPyConnection:
    with init_lock(settings):
        if not settings.lake_catalog_postgres:
            prepare_catalog(settings.lake_catalog_file)
        con = connect(location.extensions(settings))
        try:
            con.execute(f"SET threads = {int(settings.loader_lake_threads)}")
            attach(con, settings, read_only=False)
            for statement in system.DDL:
                con.execute(statement)
            con.execute(f"USE {LAKE}")
        except duckdb.Error as e:
            con.close()
            raise LakeError(f"cannot set up the lake: {e}") from e
        except BaseException:
            con.close()
            raise
    return con


def _initialised(settings: Settings) -> bool:
    """Whether a writer has created the catalog and tdedge's system tables."""
    if not settings.lake_catalog_postgres and not settings.lake_catalog_file.exists():
        return False
    con = connect(location.extensions(settings))
    try:
        attach(con, settings, read_only=True)
        found = con.execute(LIVE_TABLES, [SYSTEM_DATABASE]).fetchall()
    except (duckdb.Error, LakeError) as e:
        log.info("lake catalog not usable read-only yet (%s); setting it up", e)
        return False
    finally:
        con.close()
    return len(found) >= len(system.TABLES)
