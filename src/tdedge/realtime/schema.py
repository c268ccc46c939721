"""Creating a store's tables once, on its first open.

A store opened later does not create anything: a table that has gone missing from a
store in use (dropped, renamed, a damaged file) must surface as that store being down,
not be replaced by an empty one that answers 200 with every profile or segment gone.
``PRAGMA user_version`` records that the schema was created.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# The schema version a store created by this code carries.
VERSION = 1


def ensure(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    """Run ``statements`` if this database has never had its schema created.

    ``conn`` is in autocommit mode. The check and the creation share one write
    transaction, so two processes opening a new file at once create it once.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < VERSION:
            # IF NOT EXISTS: files created before the version was recorded have tables.
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
