"""Switching an SQLite file to write-ahead logging when several processes open it at once.

Every SQLite file tdedge keeps (journal, control database, profiles, batch facts, bulk
sessions, the embedded lake catalog) is in WAL mode, and its processes (edge workers,
the loader, the job runner) open it together at start. Switching a new file to WAL needs
it to itself for a moment, and SQLite may answer "database is locked" at once, without
calling the busy handler: the switch cannot wait while holding the shared lock it has
already taken. So the switch is retried here for up to a few seconds.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

ATTEMPTS = 200


def enter(conn: Any) -> None:
    """Put the file under ``conn`` (a sqlite3 connection or cursor) in WAL mode; a no-op
    when it already is. Raises the last error when the file stays locked that long."""
    for attempt in range(ATTEMPTS):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.005 * (1 + attempt % 8))
