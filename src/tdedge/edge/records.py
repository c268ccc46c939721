"""The records door (``*.records.in.*``, or ``--records-port``): what td-js-sdk and
Postback v2 clients talk to.

Routes:

``POST /postback/v3/event/{db}/{table}``
    Postback API v2 (spec/postback-api-v2.md): the legacy contract, but the key only in
    a header — ``Authorization: TD1 <key>`` or ``X-TD-Write-Key``, ``Authorization``
    winning when both are sent (an ``Authorization`` of another scheme is ignored) —
    and the body capped at exactly 1,048,064 bytes (413 beyond, chunked or not).
``POST /{db}/{table}``
    the Data Ingestion API (ingest.py).
``POST /android/v3/event``, ``POST /ios/v3/event``
    the pre-1.0 mobile SDKs' format (mobile.py).
``GET /``
    td-js-sdk's global id (identity.py), for a request carrying a key.
``GET /get_cookie_id``
    the server-side cookie id (identity.py).
``OPTIONS`` any of them
    the CORS preflight (cors.py); every answer carries the CORS headers.

The ``td_write_key`` URL parameter is refused on every route with 403 ``key_in_url``:
v2 takes keys in headers only, and a key in a URL ends up in logs and browser history.
Every refused write leaves an import-error row, as on the legacy door.
"""

from __future__ import annotations

import time

from tdedge.edge.auth import key_refusal, records_key, url_key
from tdedge.edge.cors import RECORDS, Cors
from tdedge.edge.http import (
    EMPTY_OBJECT,
    JSON_HEADERS,
    HTTPError,
    Protocol_,
    Response,
    Scope,
    error_response,
    read_body,
)
from tdedge.edge.identity import Identity
from tdedge.edge.ingest import Fill, IngestAPI, Mode
from tdedge.edge.legacy import POSTBACK_PREFIX, parse_record, postback_names, raw_names
from tdedge.edge.mobile import PATHS as MOBILE_PATHS
from tdedge.edge.mobile import MobileAPI
from tdedge.edge.peers import TrustedProxies
from tdedge.edge.services import Services
from tdedge.edge.width import check_width

DOOR = "records"
# Postback API v2's documented request limit, exactly.
POSTBACK_MAX_BODY_BYTES = 1_048_064


def ingest_route(path: str) -> bool:
    """``/{db}/{table}``: two non-empty segments (names are checked later, per event)."""
    database, sep, table = path[1:].partition("/")
    return bool(sep and database and table and "/" not in table)


class RecordsDoor:
    name = DOOR

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self._s = services
        self._cors = Cors(settings.cors_origins, RECORDS)
        self._identity = Identity(settings.cookie_domain)
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._ingest = IngestAPI(services)
        self._mobile = MobileAPI(services)

    def route(self, path: str) -> str | None:
        if path == "/":
            return "global_id"
        if path == "/get_cookie_id":
            return "server_cookie"
        if path.startswith(POSTBACK_PREFIX):
            return "postback"
        if path in MOBILE_PATHS:
            return "mobile"
        if ingest_route(path):
            return "ingest"
        return None

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        status, headers, body = error_response(error)
        return status, [*headers, *self._cors.headers(scope.headers.get("origin"))], body

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        origin = scope.headers.get("origin")
        if scope.method == "OPTIONS":
            return self._cors.preflight(origin)
        cors = self._cors.headers(origin)
        try:
            status, headers, body = await self._answer(route, scope, proto)
        except HTTPError as e:
            # Errors too: a page that cannot read the error cannot report it.
            e.headers.extend(cors)
            raise
        return status, [*headers, *cors], body

    async def _answer(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        if route == "server_cookie":
            return self._identity.server_cookie_answer(scope)
        if route == "global_id":
            return self._global_id(scope)
        if scope.method != "POST":
            raise HTTPError(405, "method_not_allowed", "use POST", headers=[("allow", "POST")])
        if route == "postback":
            return await self._postback(scope, proto)
        if route == "mobile":
            return await self._mobile.handle(scope, proto)
        return await self._ingest_events(scope, proto)

    def _global_id(self, scope: Scope) -> Response:
        if scope.method not in ("GET", "HEAD"):
            raise HTTPError(405, "method_not_allowed", "use GET", headers=[("allow", "GET")])
        key = records_key(scope.headers)
        refused = key_refusal(scope, key)
        if refused is not None:
            raise refused
        assert key is not None
        s = self._s
        if s.auth is not None:
            # No database is involved: only whether the key exists and is not revoked.
            reason = s.auth.refusal(s.key_hash(key), "")
            if reason is not None:
                raise HTTPError(403, reason, "the API key is not valid")
        return self._identity.global_id_answer(scope)

    async def _postback(self, scope: Scope, proto: Protocol_) -> Response:
        s = self._s
        database, table = raw_names(scope.path)
        received_ms = time.time_ns() // 1_000_000
        key = records_key(scope.headers)
        body = b""
        try:
            body = await read_body(
                scope, proto, POSTBACK_MAX_BODY_BYTES, s.settings.refused_keep_bytes
            )
            database, table = postback_names(scope.path)
            refused = key_refusal(scope, key)
            if refused is not None:
                raise refused
            assert key is not None
            s.authorize(key, database)
            record = await parse_record(s, body, scope.headers.get("content-type"))
            check_width(record, s.settings)
        except HTTPError as e:
            # Refused at the door: the client is told why, and operators see the record.
            e.body = e.body or body
            kept_key = key if key is not None else url_key(scope.query_string)
            await s.keep_refused(DOOR, received_ms, database, table, kept_key, e, scope)
            raise
        assert key is not None
        await s.accept(DOOR, received_ms, database, table, key, record)
        return 200, JSON_HEADERS, EMPTY_OBJECT

    async def _ingest_events(self, scope: Scope, proto: Protocol_) -> Response:
        key = records_key(scope.headers)
        cookies: list[tuple[str, str]] = []

        def fill_for(mode: Mode) -> Fill:
            if mode is Mode.PLAIN:
                return Fill()
            ip = self._proxies.request_ip(scope)
            if mode is Mode.MOBILE:
                return Fill(ip=ip)
            global_id, cookie = self._identity.global_id(scope)
            cookies.append(cookie)
            return Fill(ip=ip, global_id=global_id)

        status, headers, body = await self._ingest.handle(
            scope, proto, key, key_refusal(scope, key), fill_for
        )
        return status, [*headers, *cookies], body
