"""The live console on the REST API's door: ``GET /console`` (one static page) and the
JSON it polls, behind a master key. Each account sees its own databases only.

- ``/console/api/status``: the account's tables (rows, bytes, newest ``time``, the
  last commit that inserted into each), the loader's lag and the journal's backlog
  (the whole server's: how far behind loading is, not anyone's data).
- ``/console/api/events?after=SNAPSHOT&database=&table=``: the rows and import errors
  committed after a snapshot (lake/feed.py), the newest ``EVENTS_PER_TABLE`` of each
  table; the answer's ``cursor`` is the next ``after``.

The page needs no build step and loads nothing from elsewhere: many operators'
machines have no internet. It sends the key it is given as ``Authorization: TD1``
and keeps it in the tab's session storage only.
"""

from __future__ import annotations

import threading
import time
from importlib.resources import files
from typing import Any

import duckdb
import msgspec

from tdedge.api.callers import Caller, require_master
from tdedge.api.context import Api, valid_name
from tdedge.api.wire import ApiError, ok
from tdedge.edge.http import Response
from tdedge.lake.connection import open_connection
from tdedge.lake.feed import last_inserts, read_changes
from tdedge.loader.heartbeat import read_heartbeat

PAGE_PATH = "/console"
API_PREFIX = "/console/api/"
# Events of one table one answer carries at most (the newest): a page shows a sample
# of a busy table, and the answer stays small whatever the rate.
EVENTS_PER_TABLE = 50
_PAGE_HEADERS = [
    ("content-type", "text/html; charset=utf-8"),
    # Its own script only, and calls to its own origin: the page shows records as sent
    # by anyone, and must never run what they carry.
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:",
    ),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
]


class Console:
    def __init__(self, api: Api) -> None:
        self._api = api
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._page = files("tdedge.api").joinpath("console.html").read_bytes()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def page(self) -> Response:
        return 200, list(_PAGE_HEADERS), self._page

    def answer(self, path: str, caller: Caller, params: dict[str, str]) -> Response:
        require_master(caller)
        what = path[len(API_PREFIX) :]
        if what == "status":
            return ok(self._status(caller))
        if what == "events":
            return ok(self._events(caller, params))
        raise ApiError(404, "not_found", f"no such console endpoint: {path}")

    def _status(self, caller: Caller) -> dict[str, Any]:
        api = self._api
        owned = [name for name, _ in api.account_databases(caller)]
        inserts = self._with_lake(last_inserts)
        tables = []
        for database in owned:
            for t in api.catalog.tables(database):
                tables.append(
                    {
                        "database": database,
                        "table": t.name,
                        "rows": t.count,
                        "bytes": t.size,
                        "newest_time": t.last_log_time,
                        "last_insert_at": inserts.get((database, t.name), t.updated_at),
                    }
                )
        beat = read_heartbeat(api.settings.loader_heartbeat)
        loader = None
        if beat is not None:
            loader = {
                "beat_age_s": max(0.0, time.time() - beat.time),
                "lag_records": beat.lag_records,
                "lag_seconds": beat.lag_seconds,
                "failures": beat.failures,
            }
        return {
            "account_id": caller.account_id,
            "now": time.time(),
            "databases": owned,
            "tables": tables,
            "loader": loader,
        }

    def _events(self, caller: Caller, params: dict[str, str]) -> dict[str, Any]:
        after = _cursor(params.get("after"))
        database = _optional_name(params.get("database"), "database")
        table = _optional_name(params.get("table"), "table")
        owned = {name for name, _ in self._api.account_databases(caller)}

        def wanted(db: str, tbl: str) -> bool:
            return (
                db in owned
                and (database is None or db == database)
                and (table is None or tbl == table)
            )

        changes = self._with_lake(
            lambda con: read_changes(
                con, after, wanted, account_id=caller.account_id, limit=EVENTS_PER_TABLE
            )
        )
        return {
            "cursor": changes.cursor,
            "events": msgspec.to_builtins(changes.events),
            "inserted": [
                {"database": d, "table": t, "at": at} for (d, t), at in changes.inserted.items()
            ],
        }

    def _with_lake(self, read: Any) -> Any:
        """``read(con)`` on this worker's read-only lake connection, one at a time; a
        stale connection (see Lake.query) is replaced once."""
        with self._lock:
            for attempt in (1, 2):
                if self._con is None:
                    self._con = open_connection(self._api.settings, read_only=True)
                try:
                    return read(self._con)
                except Exception:
                    self._con.close()
                    self._con = None
                    if attempt == 2:
                        raise
        return None


# A snapshot number fits a BIGINT: 18 digits always do.
MAX_CURSOR_DIGITS = 18


def _cursor(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_CURSOR_DIGITS:
        raise ApiError(400, "invalid_cursor", f"after must be a snapshot number, not {raw[:40]!r}")
    return int(raw)


def _optional_name(raw: str | None, what: str) -> str | None:
    return None if not raw else valid_name(raw, what)
