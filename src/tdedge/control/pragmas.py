"""How tdedge opens an embedded (SQLite) control database: WAL, fsync at every commit,
and a wait instead of an error while another process writes."""

from __future__ import annotations

from typing import Any

from tdedge import wal


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """A SQLAlchemy ``connect`` listener. The busy timeout comes first, so that the
    statements after it wait for a writer instead of failing."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    wal.enter(cur)
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()
