"""The legacy door (``in.*``): the Postback API as spec/postback-api-legacy.md gives it,
the tracking pixel (pixel.py) on the same path, ``/get_cookie_id`` for the
``ssc.<domain>`` hosts td-js-sdk calls (they are not ``*.records.in.*`` hosts), and the
pre-1.0 mobile SDKs' ``/android/v3/event`` and ``/ios/v3/event`` (mobile.py): those
SDKs sent to ``in.treasuredata.com`` unless told otherwise."""

from __future__ import annotations

import time

from tdedge.edge.auth import legacy_key
from tdedge.edge.body import FORM, media_type, record_from_body
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
from tdedge.edge.mobile import PATHS as MOBILE_PATHS
from tdedge.edge.mobile import MobileAPI
from tdedge.edge.offload import INLINE_PARSE_BYTES
from tdedge.edge.pixel import Params, Pixel, form_params, pixel_params, query_params
from tdedge.edge.services import Services
from tdedge.edge.width import check_width
from tdedge.names import NAME_RULE, is_valid_name, normalize

POSTBACK_PREFIX = "/postback/v3/event/"
DOOR = "legacy"


def raw_names(path: str) -> tuple[str, str]:
    """``(database, table)`` of a postback path as sent (each cut to 256 characters),
    for the import-error row of a request refused before its names were checked."""
    database, _, table = path[len(POSTBACK_PREFIX) :].partition("/")
    return database[:256], table[:256]


def postback_names(path: str) -> tuple[str, str]:
    """``(database, table)`` from a postback path, normalised; 400 naming the rule."""
    database, _, table = path[len(POSTBACK_PREFIX) :].partition("/")
    if not is_valid_name(database) or not is_valid_name(table):
        raise HTTPError(
            400, "invalid_name", f"invalid database or table name in {path!r}: {NAME_RULE}"
        )
    return normalize(database), normalize(table)


class LegacyDoor:
    name = DOOR

    def __init__(self, services: Services) -> None:
        self._s = services
        self._pixel = Pixel(services)
        self._identity = Identity(services.settings.cookie_domain)
        self._cors = Cors(services.settings.cors_origins, RECORDS)
        self._mobile = MobileAPI(services)

    def route(self, path: str) -> str | None:
        if path.startswith(POSTBACK_PREFIX):
            return "postback"
        if path in MOBILE_PATHS:
            return "mobile"
        return "server_cookie" if path == "/get_cookie_id" else None

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        return error_response(error)

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        if route == "server_cookie":
            return self._server_cookie(scope)
        if route == "mobile":
            if scope.method != "POST":
                raise HTTPError(405, "method_not_allowed", "use POST", headers=[("allow", "POST")])
            return await self._mobile.handle(scope, proto)
        if scope.method in ("GET", "HEAD"):
            params = pixel_params(scope.query_string)
            if params is not None:
                return await self._pixel.answer(scope, params)
        if scope.method != "POST":
            raise HTTPError(
                405,
                "method_not_allowed",
                "use POST, or GET with td_format=pixel",
                headers=[("allow", "POST, GET, HEAD")],
            )
        return await self._postback(scope, proto)

    def _server_cookie(self, scope: Scope) -> Response:
        origin = scope.headers.get("origin")
        if scope.method == "OPTIONS":
            return self._cors.preflight(origin)
        cors = self._cors.headers(origin)
        try:
            status, headers, body = self._identity.server_cookie_answer(scope)
        except HTTPError as e:
            e.headers.extend(cors)
            raise
        return status, [*headers, *cors], body

    async def _postback(self, scope: Scope, proto: Protocol_) -> Response:
        s = self._s
        received_ms = time.time_ns() // 1_000_000
        key = legacy_key(scope.headers, scope.query_string)
        database, table = raw_names(scope.path)
        try:
            body = await read_body(
                scope, proto, s.settings.max_body_bytes, s.settings.refused_keep_bytes
            )
        except HTTPError as e:
            await s.keep_refused(DOOR, received_ms, database, table, key, e, scope)
            raise
        pixel = pixel_form(scope, body)
        if pixel is not None:
            # The POST form of the pixel: same record, same answer as the GET (a bad
            # table name included), so it is told apart before the names are checked.
            return await self._pixel.answer(scope, pixel)
        try:
            database, table = postback_names(scope.path)
            if key is None:
                raise HTTPError(
                    403,
                    "missing_key",
                    "no API key: send X-TD-Write-Key or the td_write_key URL parameter",
                )
            s.authorize(key, database)
            record = await parse_record(s, body, scope.headers.get("content-type"))
            check_width(record, s.settings)
        except HTTPError as e:
            # Refused at the door: the client is told why, and operators see the record.
            e.body = body
            await s.keep_refused(DOOR, received_ms, database, table, key, e, scope)
            raise
        await s.accept(DOOR, received_ms, database, table, key, record)
        return 200, JSON_HEADERS, EMPTY_OBJECT


async def parse_record(s: Services, body: bytes, content_type: str | None) -> bytes:
    """``record_from_body`` with the configured depth limit, off the loop when large."""
    depth = s.settings.max_json_depth
    if len(body) <= INLINE_PARSE_BYTES:
        return record_from_body(body, content_type, depth)
    return await s.offload.run(record_from_body, body, content_type, depth)


def pixel_form(scope: Scope, body: bytes) -> Params | None:
    """The pixel parameters of a POST (URL then form fields), or None if it is no pixel.

    A POST is the pixel's when ``td_format=pixel`` is in its URL or in its form body.
    """
    in_url = pixel_params(scope.query_string) is not None
    is_form = media_type(scope.headers.get("content-type")) == FORM
    if not in_url and not (is_form and b"td_format=pixel" in body):
        return None
    params = query_params(scope.query_string)
    if is_form:
        params += form_params(body)
    return params if params.is_pixel() else None
