"""The legacy door (``in.*``): the Postback API as spec/postback-api-legacy.md gives it."""

from __future__ import annotations

import time

from tdedge.control.keys import hash_key
from tdedge.edge.auth import legacy_key
from tdedge.edge.body import record_from_body
from tdedge.edge.http import (
    EMPTY_OBJECT,
    JSON_HEADERS,
    HTTPError,
    Protocol_,
    Response,
    Scope,
    read_body,
)
from tdedge.edge.services import Services
from tdedge.journal.envelope import Envelope
from tdedge.names import NAME_RULE, is_valid_name, normalize

POSTBACK_PREFIX = "/postback/v3/event/"
DOOR = "legacy"


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

    def route(self, path: str) -> str | None:
        return "postback" if path.startswith(POSTBACK_PREFIX) else None

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        if scope.method != "POST":
            raise HTTPError(405, "method_not_allowed", "use POST", headers=[("allow", "POST")])
        return await self._postback(scope, proto)

    async def _postback(self, scope: Scope, proto: Protocol_) -> Response:
        s = self._s
        database, table = postback_names(scope.path)
        received_ms = time.time_ns() // 1_000_000
        key = legacy_key(scope.headers, scope.query_string)
        try:
            body = await read_body(scope, proto, s.settings.max_body_bytes)
            if key is None:
                raise HTTPError(
                    403,
                    "missing_key",
                    "no API key: send X-TD-Write-Key or the td_write_key URL parameter",
                    body=body,
                )
            record = record_from_body(body, scope.headers.get("content-type"))
        except HTTPError as e:
            # Refused at the door: the client is told why, and operators see the record.
            await s.keep_refused(DOOR, received_ms, database, table, key, e)
            raise
        key_hash = hash_key(key)
        if s.auth is not None:
            reason = s.auth.refusal(key_hash, database)
            if reason is not None:
                refused = HTTPError(403, reason, "the API key may not write to this database")
                refused.body = record
                await s.keep_refused(DOOR, received_ms, database, table, key, refused)
                raise refused
        await s.append(Envelope(received_ms, DOOR, database, table, key_hash, record))
        return 200, JSON_HEADERS, EMPTY_OBJECT
