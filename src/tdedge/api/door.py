"""The api door (``api.*`` or ``--api-port``): Treasure Data's REST API, ``/v3/…``.

The REST API sits above the edge: it reads the lake's catalog and the job store, which
the edge itself never imports, so the worker's assembly (worker.py) hands this door to
the edge. Routing and authentication live here; each resource is answered by a module of
``tdedge.api``. Handlers touch SQLite, the lake catalog and result files, so they run
in worker threads, never on the event loop; bulk imports come back to the loop only
to append to the journal. Every refusal has TD's body, ``{"error", "message",
"severity"}``, and the status td-client maps to its exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import NamedTuple

from tdedge import backends
from tdedge.api import bulk_import, bulk_sessions, console, databases, jobs, tables
from tdedge.api.callers import Authenticator, Caller, require_master
from tdedge.api.context import Api, Request, path_args
from tdedge.api.forms import form_fields, query_params
from tdedge.api.wire import ApiError, error_response, ok
from tdedge.control.imports import ImportLedger
from tdedge.control.jobs import JobStore
from tdedge.edge.http import HTTPError, Protocol_, Response, Scope, read_body
from tdedge.edge.services import Services
from tdedge.errors import LakeError, LimitReached
from tdedge.lake.inventory import LakeCatalog

log = logging.getLogger("tdedge.api")

DOOR = "api"
# Form bodies of the REST API are small (a query); imports have their own cap.
FORM_MAX_BYTES = 4 * 1024 * 1024

Handler = Callable[[Api, Request], Response]


class Route(NamedTuple):
    method: str
    pattern: re.Pattern[str]
    name: str  # metrics label
    handler: Handler | None  # None: answered on the event loop (ApiDoor._on_loop)
    master: bool = True  # whether a write key is refused


def _route(
    method: str, path: str, name: str, handler: Handler | None, master: bool = True
) -> Route:
    return Route(method, re.compile(path.replace("{}", "([^/]+)")), name, handler, master)


ROUTES = (
    _route("GET", "/v3/database/list", "database_list", databases.list_databases),
    _route("POST", "/v3/database/create/{}", "database_create", databases.create_database),
    _route("POST", "/v3/database/delete/{}", "database_delete", databases.delete_database),
    _route("GET", "/v3/table/list/{}", "table_list", tables.list_tables),
    _route("GET", "/v3/table/show/{}/{}", "table_show", tables.show_table),
    _route("POST", "/v3/table/create/{}/{}/{}", "table_create", tables.create_table),
    _route("POST", "/v3/table/delete/{}/{}", "table_delete", tables.delete_table),
    _route("POST", "/v3/job/issue/{}/{}", "job_issue", jobs.issue),
    _route("GET", "/v3/job/status/{}", "job_status", jobs.status),
    _route("GET", "/v3/job/show/{}", "job_show", jobs.show),
    _route("GET", "/v3/job/result/{}", "job_result", jobs.result),
    _route("POST", "/v3/job/kill/{}", "job_kill", jobs.kill),
    _route("GET", "/v3/job/list", "job_list", jobs.job_list),
    _route("PUT", "/v3/table/import/{}/{}/{}", "import", None, master=False),
    _route("PUT", "/v3/table/import_with_id/{}/{}/{}/{}", "import", None, master=False),
    # TD's Bulk Import API (api/bulk_sessions.py): master keys only, as it runs jobs.
    _route("POST", "/v3/bulk_import/create/{}/{}/{}", "bulk_create", bulk_sessions.create),
    _route("GET", "/v3/bulk_import/show/{}", "bulk_show", bulk_sessions.show),
    _route("GET", "/v3/bulk_import/list", "bulk_list", bulk_sessions.list_sessions),
    _route("POST", "/v3/bulk_import/delete/{}", "bulk_delete", bulk_sessions.delete),
    _route("PUT", "/v3/bulk_import/upload_part/{}/{}", "bulk_upload_part", None),
    _route("GET", "/v3/bulk_import/list_parts/{}", "bulk_list_parts", bulk_sessions.list_parts),
    _route(
        "POST", "/v3/bulk_import/delete_part/{}/{}", "bulk_delete_part", bulk_sessions.delete_part
    ),
    _route("POST", "/v3/bulk_import/freeze/{}", "bulk_freeze", bulk_sessions.freeze),
    _route("POST", "/v3/bulk_import/unfreeze/{}", "bulk_unfreeze", bulk_sessions.unfreeze),
    _route("POST", "/v3/bulk_import/perform/{}", "bulk_perform", bulk_sessions.perform),
    _route("POST", "/v3/bulk_import/commit/{}", "bulk_commit", None),
    _route(
        "GET",
        "/v3/bulk_import/error_records/{}",
        "bulk_error_records",
        bulk_sessions.error_records,
    ),
)
_BY_NAME = {r.name: [x for x in ROUTES if x.name == r.name] for r in ROUTES}
SERVER_STATUS = "/v3/system/server_status"
_SLASHES = re.compile("/{2,}")


class ApiDoor:
    name = DOOR

    def __init__(self, services: Services) -> None:
        settings = services.settings
        # The worker's control store and key cache (Services), not copies of their own.
        control = services.control
        engine = control.engine
        self._api = Api(
            settings=settings,
            engine=engine,
            control=control,
            jobs=JobStore(engine),
            catalog=LakeCatalog(settings),
            auth=Authenticator(services.directory),
            services=services,
            sessions=backends.bulk_sessions(settings),
            results=backends.results(settings),
        )
        self._ledger = ImportLedger(engine)
        self._console = console.Console(self._api)

    def close(self) -> None:
        """What this door opened itself; the control store is the worker's to close."""
        self._console.close()
        self._api.catalog.close()
        self._api.sessions.close()
        self._api.results.close()

    def route(self, path: str) -> str | None:
        path = _normal(path)
        if path == SERVER_STATUS:
            return "server_status"
        if path == console.PAGE_PATH:
            return "console"
        if path.startswith(console.API_PREFIX):
            return "console_api"
        if not path.startswith("/v3/"):
            return None
        for r in ROUTES:
            if r.pattern.fullmatch(path):
                return r.name
        return "unknown"

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        return error_response(error)

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        try:
            return await self._handle(route, scope, proto)
        except HTTPError as e:
            return error_response(e)
        except LimitReached as e:  # a database a bulk import would create, say
            return error_response(ApiError(403, e.code, str(e)))
        except LakeError as e:
            log.error("lake error answering %s", scope.path, extra={"error": str(e)})
            return error_response(ApiError(500, "lake_error", str(e)))

    async def _handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        if route == "server_status":
            return ok({"status": "ok"})
        if route in ("console", "console_api"):
            return await self._console_answer(route, scope)
        candidates = _BY_NAME.get(route)
        if not candidates:
            raise ApiError(404, "not_found", f"no such endpoint: {scope.method} {scope.path}")
        found = _match(candidates, _normal(scope.path))
        if found is None:
            raise ApiError(404, "not_found", f"no such endpoint: {scope.method} {scope.path}")
        r, args = found
        if scope.method != r.method:
            raise ApiError(405, "method_not_allowed", f"use {r.method}", [("allow", r.method)])
        api = self._api
        caller = await asyncio.to_thread(api.auth.caller, scope.headers)
        if r.master:
            require_master(caller)
        if r.handler is None:
            return await self._on_loop(r.name, args, caller, scope, proto)
        body = await read_body(scope, proto, FORM_MAX_BYTES) if scope.method == "POST" else b""
        request = _request(scope, args, body, caller)
        return await asyncio.to_thread(r.handler, api, request)

    async def _console_answer(self, route: str, scope: Scope) -> Response:
        if scope.method != "GET":
            raise ApiError(405, "method_not_allowed", "use GET", [("allow", "GET")])
        if route == "console":
            return self._console.page()
        caller = await asyncio.to_thread(self._api.auth.caller, scope.headers)
        params = query_params(scope.query_string)
        path = _normal(scope.path)
        return await asyncio.to_thread(self._console.answer, path, caller, params)

    async def _on_loop(
        self, route: str, args: tuple[str, ...], caller: Caller, scope: Scope, proto: Protocol_
    ) -> Response:
        """The routes that read a large body or journal records."""
        api = self._api
        if route == "bulk_upload_part":
            body = await read_body(scope, proto, api.settings.bulk_part_max_bytes)
            return await bulk_sessions.upload_part(api, caller, args, body)
        if route == "bulk_commit":
            await read_body(scope, proto, FORM_MAX_BYTES)
            return await bulk_sessions.commit(api, caller, args)
        body = await read_body(scope, proto, api.settings.import_max_bytes)
        return await bulk_import.bulk_import(api, self._ledger, caller, args, body)


def _normal(path: str) -> str:
    """td-client joins an endpoint without a trailing slash into ``//v3/…``: accept it."""
    return _SLASHES.sub("/", path) if "//" in path else path


def _match(candidates: list[Route], path: str) -> tuple[Route, tuple[str, ...]] | None:
    for r in candidates:
        m = r.pattern.fullmatch(path)
        if m is not None:
            return r, path_args(m.groups())
    return None


def _request(scope: Scope, args: tuple[str, ...], body: bytes, caller: Caller) -> Request:
    params = query_params(scope.query_string)
    params.update(form_fields(body, scope.headers.get("content-type")))
    host = str(scope.headers.get("host") or scope.authority or "localhost")
    return Request(scope.method, args, params, scope.headers, body, caller, host)
