"""The live console on the REST API's door: ``GET /console`` (one static page) and the
JSON it polls, behind a master key. Each account sees its own databases only.

- ``/console/api/status``: the account's tables (rows, bytes, newest ``time``, the
  last commit that inserted into each, the rows loaded through each door), the
  loader's lag and the journal's backlog (the whole server's: how far behind loading
  is, not anyone's data).
- ``/console/api/events?after=SNAPSHOT&database=&table=``: the rows and import errors
  committed after a snapshot (lake/feed.py), the newest ``EVENTS_PER_TABLE`` of each
  table; the answer's ``cursor`` is the next ``after``.
- ``/console/api/decisions``: the account's last p13n decisions (realtime/decisions.py),
  and ``/console/api/decision?id=`` one of them with its explain trace, computed then.

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

from tdedge import backends, numerals
from tdedge.api.callers import Caller, require_master
from tdedge.api.context import Api, valid_name
from tdedge.api.wire import ApiError, ok
from tdedge.edge.http import Response
from tdedge.lake.connection import open_connection
from tdedge.lake.feed import door_counts, last_inserts, read_changes
from tdedge.loader.heartbeat import read_heartbeat
from tdedge.realtime import batch, decisions
from tdedge.realtime.batch import SQLiteBatchStore
from tdedge.realtime.engine import Engine
from tdedge.realtime.refresh import compiled
from tdedge.realtime.registry import Registry

PAGE_PATH = "/console"
API_PREFIX = "/console/api/"
# Events of one table one answer carries at most (the newest): a page shows a sample
# of a busy table, and the answer stays small whatever the rate.
EVENTS_PER_TABLE = 50
# p13n decisions one answer lists at most, the newest, across the workers.
DECISIONS_SHOWN = 200
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
        self._run_dir = api.settings.root / "run"

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
        if what == "decisions":
            return ok(self._decisions(caller))
        if what == "decision":
            return ok(self._explain(caller, params))
        raise ApiError(404, "not_found", f"no such console endpoint: {path}")

    def _status(self, caller: Caller) -> dict[str, Any]:
        api = self._api
        owned = [name for name, _ in api.account_databases(caller)]
        inserts = self._with_lake(last_inserts)
        doors = self._with_lake(door_counts)
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
                        "doors": doors.get((database, t.name), {}),
                    }
                )
        beat = read_heartbeat(api.settings.loader_heartbeat)
        loader: dict[str, float | None] | None = None
        if beat is not None:
            loader = {
                "beat_age_s": max(0.0, time.time() - beat.time),
                "lag_records": beat.lag_records,
                "lag_seconds": beat.lag_seconds,
                "failures": beat.failures,
            }
        elif (waiting := backends.unloaded(api.settings)) is not None:
            # No loader beats (serve --no-loader): what waits for one, from the journal.
            records, oldest_ms = waiting
            waited = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
            loader = {
                "beat_age_s": None,
                "lag_records": records,
                "lag_seconds": waited,
                "failures": 0,
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

    def _decisions(self, caller: Caller) -> dict[str, Any]:
        found = decisions.recent(self._run_dir, caller.account_id, DECISIONS_SHOWN)
        return {"decisions": [_decision(ident, d) for ident, d in found]}

    def _explain(self, caller: Caller, params: dict[str, str]) -> dict[str, Any]:
        ident = params.get("id") or ""
        found = decisions.find(self._run_dir, caller.account_id, ident)
        if found is None:
            raise ApiError(404, "not_found", f"no such decision of this account: {ident[:40]!r}")
        settings = self._api.settings
        registry = Registry(self._api.engine)  # the worker's control database, shared or not
        try:
            service = compiled(registry).get(found.service)
        finally:
            registry.close()
        if service is None:
            raise ApiError(404, "not_found", f"service {found.service!r} is not configured now")
        engine = Engine(
            backends.profiles(settings), SQLiteBatchStore(batch.default_path(settings.root))
        )
        try:
            explained = engine.explain(service, found.keys, int(time.time() * 1000), found.table)
        finally:
            engine.store.close()
            engine.batch.close()
        profile = explained.profile
        return {
            **_decision(ident, found),
            "profile": None if profile is None else {"id": profile.id, "events": profile.events},
            "attributes": msgspec.to_builtins(explained.values, enc_hook=str),
            "segments": explained.segments,
            "sections": msgspec.to_builtins(explained.sections, enc_hook=str),
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


def _decision(ident: str, d: decisions.Decision) -> dict[str, Any]:
    try:
        offers = msgspec.json.decode(d.answer).get("offers")
    except (msgspec.DecodeError, AttributeError):
        offers = None
    return {
        "id": ident,
        "at": d.at_ms / 1000,
        "service": d.service,
        "database": d.database,
        "table": d.table,
        "keys": d.keys,
        "offers": offers,
    }


def _cursor(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    snapshot = numerals.bigint(raw)
    if snapshot is None:
        raise ApiError(400, "invalid_cursor", f"after must be a snapshot number, not {raw[:40]!r}")
    return snapshot


def _optional_name(raw: str | None, what: str) -> str | None:
    return None if not raw else valid_name(raw, what)
