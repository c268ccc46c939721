"""The control database's schema: versioned by Alembic, upgraded by tdedge itself.

Every store of the control plane calls ``ensure`` on its engine before its first use.
The first call of a process for a database reads the revision the database is at
(``alembic_version``) and, when it is older than this tdedge's newest, upgrades it to
that (control/migrations/versions/): under PostgreSQL's advisory lock or SQLite's write
lock, so that of several nodes or processes starting at once one upgrades and the
others find it done. A database at a revision this tdedge does not know was upgraded by
a newer tdedge: it is refused (``SchemaTooNew``), never written to.

A database made before the schema was versioned has no ``alembic_version``: the first
revision creates only the tables missing from it, so it is taken over with its rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tdedge.control.pragmas import sqlite_pragmas
from tdedge.errors import ControlError

MIGRATIONS = Path(__file__).parent / "migrations"
# The advisory lock the upgrade is taken under on PostgreSQL ("tdge" and 1).
UPGRADE_LOCK = 0x7464_6765_0000_0001

_ready: set[str] = set()  # databases this process has seen at the newest revision
_lock = threading.Lock()


class SchemaTooNew(ControlError):
    """The control database was upgraded by a newer tdedge than this one."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    """The newest revision this tdedge knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def revision(engine: Engine) -> str | None:
    """The revision the database is at; None when it was never versioned."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure(engine: Engine) -> None:
    """Bring the database at ``engine`` to this tdedge's newest revision, once per
    process; ``SchemaTooNew`` when a newer tdedge has upgraded it past that."""
    key = engine.url.render_as_string(hide_password=False)
    with _lock:
        if key in _ready:
            return
        newest = head()
        if revision(engine) != newest:  # else: nothing to lock for
            _upgrade(engine, newest)
        _ready.add(key)


def _upgrade(engine: Engine, newest: str) -> None:
    config = _config()
    script = ScriptDirectory.from_config(config)
    with _locked(engine) as conn:
        found = MigrationContext.configure(conn).get_current_revision()
        if found == newest:
            return  # another process upgraded it while this one waited
        if found is not None:
            try:
                script.get_revision(found)
            except CommandError:
                raise SchemaTooNew(
                    f"the control database is at schema revision {found}, newer than this "
                    f"tdedge knows (up to {newest}): a newer tdedge upgraded it; run that "
                    "version (or newer) here too"
                ) from None
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextmanager
def _locked(engine: Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the database's upgrade lock."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Held until the transaction ends; PostgreSQL's DDL is transactional, so the
            # upgrade commits whole or not at all.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(UPGRADE_LOCK)))
            yield conn
        return
    # SQLite: BEGIN IMMEDIATE takes the write lock at once (pysqlite would begin only at
    # the first INSERT, and DDL outside a transaction); SQLite's DDL is transactional too.
    locking = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    event.listen(locking, "connect", _sqlite_manual)
    event.listen(locking, "begin", _begin_immediate)
    try:
        with locking.begin() as conn:
            yield conn
    finally:
        locking.dispose()


def _sqlite_manual(dbapi_conn: Any, _record: Any) -> None:
    sqlite_pragmas(dbapi_conn, _record)
    dbapi_conn.isolation_level = None  # transactions begun by _begin_immediate only


def _begin_immediate(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
