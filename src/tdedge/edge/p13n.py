"""The p13n door (``*.p13n.in.*``): Treasure Data's Real-time Personalization API.

``POST /{db}/{table}`` and ``POST /public/{db}/{table}`` with ``Authorization: TD1 <key>``,
``WP13n-Token: {account}/{instance}/{32 hex}`` and ``Content-Type:
application/vnd.treasuredata.v1+json``. One request: check the key and the token, append
the event to the journal (the loader puts it in its table like any ingested record),
stitch the caller's identity, update the profile atomically, answer the offers whose
criteria the updated profile meets: ``{"offers": {…}}``.

Errors are ``{"code": <int>, "message": "…"}`` with the document's codes: 3000-3007
(400), 429 with 2003/2013 and Retry-After, 500 with 1001-1005 when a store is down (503
for the journal, which DESIGN.md promises), and the HTTP status as the code for 401,
403, 405, 413 and 415. This door checks API keys before answering: its answer depends
on the caller's account. Requests refused with a 4xx are kept, as on every door, so
they show in the import errors (reason ``p13n_<code>``).

The engine — stitching, the profile update, the sections — runs in this worker
(``realtime/batcher.py``), or with ``--p13n-engine process`` in the engine process
(``realtime/host.py``, reached through ``realtime/client.py``). Either way it decides a
group per event-loop iteration: one store transaction, one lock and one commit for the
requests that became ready together.
"""

from __future__ import annotations

import gc
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa

from tdedge.control import access
from tdedge.control.directory import Directory
from tdedge.edge import cors
from tdedge.edge.body import media_type
from tdedge.edge.http import HTTPError, Protocol_, Response, Scope, encode_json, read_body
from tdedge.edge.memo import Memo
from tdedge.edge.nesting import deeper_than
from tdedge.edge.peers import TrustedProxies
from tdedge.edge.services import Services
from tdedge.journal.envelope import Envelope
from tdedge.loader.limits import columns_refusal
from tdedge.realtime import tokens
from tdedge.realtime.batcher import Batcher
from tdedge.realtime.client import EngineClient
from tdedge.realtime.collector import freeze_survivors
from tdedge.realtime.config import P13N_NAME
from tdedge.realtime.decisions import Decisions
from tdedge.realtime.engine import Engine, Request
from tdedge.realtime.errors import (
    ConfigStoreDown,
    JournalDown,
    KeyStoreDown,
    Refused,
    StoreUnavailable,
)
from tdedge.realtime.limits import Limiter
from tdedge.realtime.service import Service
from tdedge.realtime.tokens import TokenInfo
from tdedge.realtime.view import View

log = logging.getLogger("tdedge.p13n")

DOOR = "p13n"
MEDIA_TYPE = "application/vnd.treasuredata.v1+json"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?")
# /{db}/{table} or /public/{db}/{table}, in one match.
_PATH = re.compile(rf"/(public/)?({P13N_NAME.pattern})/({P13N_NAME.pattern})")
_JSON = [("content-type", "application/json")]
_event_decoder = msgspec.json.Decoder()


MESSAGES = {
    3000: "RT token was not provided (WP13n-Token header).",
    3001: "RT token is not in configuration.",
    3002: "RT token account conflicts with Authed user account.",
    3003: "RT token is in an invalid format.",
    3004: "Invalid event object.",
    3005: "Request origin not in IP whitelist.",
    3006: "RT token type does not match the endpoint.",
    3007: "Invalid or missing Origin.",
}


class DoorError(Exception):
    def __init__(
        self, status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


def _bad(code: int, detail: str = "") -> DoorError:
    return DoorError(400, code, f"{MESSAGES[code]} {detail}".strip())


class P13nDoor:
    name = DOOR

    # Opened on the first p13n request (``_open``): a p13n store that cannot be opened
    # answers 500 on this door and never takes the worker's other doors down with it.
    _directory: Directory
    _view: View
    _engine: Batcher | EngineClient

    def __init__(self, services: Services, clock: Callable[[], float] = time.time) -> None:
        s = services.settings
        self._s = services
        self._clock = clock
        self._opened = False
        # /public/ routes are td-js-sdk's fetchPersonalization: credentialed CORS.
        self._cors = cors.Cors(s.cors_origins, cors.P13N)
        self._limiter = Limiter(s.workers)
        self._proxies = TrustedProxies(s.trusted_proxies)
        self._networks: dict[bytes, list[tokens.Network]] = {}
        self._configured = -1  # the view generation the limits were taken from
        # Parsing a token costs more than a look-up (key hashes: Services.key_hash).
        self._parsed = Memo(tokens.parse)
        self._decisions = Decisions(s.root / "run", s.p13n_decisions_kept)

    def _open(self) -> None:
        if self._opened:
            return
        s = self._s.settings
        try:
            registry = self._s.registry
            engine: Batcher | EngineClient
            if s.engine_process:
                engine = EngineClient(s.p13n_socket)
            else:
                engine = Batcher(Engine(self._s.profiles, self._s.batch), self._clock)
        except StoreUnavailable as e:
            log.error("p13n stores cannot be opened", extra={"error": str(e)})
            raise DoorError(500, e.code, f"{e.store} unavailable; retry later") from None
        except (OSError, sqlite3.Error, sa.exc.SQLAlchemyError) as e:
            log.error("p13n stores cannot be opened", extra={"error": str(e)})
            raise DoorError(500, 9999, "personalization unavailable; retry later") from None
        self._directory = self._s.directory
        self._view = View(registry)
        self._engine = engine
        self._opened = True
        # The stores and what they imported live as long as the worker, like what
        # EdgeApp froze at start-up: out of the collector's full passes (~100 ms each);
        # so do the profiles an inline engine decodes from now on (realtime/collector.py).
        gc.freeze()
        if not s.engine_process:
            freeze_survivors()

    def route(self, path: str) -> str | None:
        found = _PATH.fullmatch(path)
        if found is None:
            return None
        return "public" if found.group(1) else "event"

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        # The HTTP status as the code, as for this door's other statuses without one.
        public = route == "public"
        cors = self._cors.headers(scope.headers.get("origin")) if public else []
        body = encode_json({"code": error.status, "message": error.message})
        return error.status, [("content-type", "application/json"), *cors, *error.headers], body

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        public = route == "public"
        origin = scope.headers.get("origin") if public else None
        # Errors carry them too: a page that cannot read the error cannot report it.
        headers = self._cors.headers(origin) if public else []
        try:
            if public and scope.method == "OPTIONS":
                return self._cors.preflight(origin)
            if scope.method != "POST":
                raise DoorError(405, 405, "use POST", [("allow", "POST")])
            return await self._event(scope, proto, public, headers)
        except DoorError as e:
            body = encode_json({"code": e.code, "message": e.message})
            return e.status, [("content-type", "application/json"), *headers, *e.headers], body

    async def _event(
        self, scope: Scope, proto: Protocol_, public: bool, allow: list[tuple[str, str]]
    ) -> Response:
        self._open()
        parts = scope.path.split("/")
        database, table = parts[-2], parts[-1]
        received_ms = int(self._clock() * 1000)
        key = _td1_key(scope.headers.get("authorization"))
        try:
            body = await read_body(
                scope,
                proto,
                self._s.settings.max_body_bytes,
                self._s.settings.refused_keep_bytes,
            )
        except HTTPError as e:
            await self._s.keep_refused(DOOR, received_ms, database, table, key, e, scope)
            raise DoorError(e.status, e.status, e.message) from None
        try:
            account, service, event, keys = self._admit(scope, database, table, key, body, public)
        except DoorError as e:
            if e.status < 500:
                refused = HTTPError(e.status, f"p13n_{e.code}", e.message, body=body)
                await self._s.keep_refused(DOOR, received_ms, database, table, key, refused, scope)
            raise
        assert key is not None
        refusal = self._limiter.admit(time.monotonic())
        if refusal is not None:
            code, retry = refusal
            message = (
                "over the engine's throughput limit; retry later"
                if code == 2003
                else "over the engine's concurrency limit; retry later"
            )
            raise DoorError(429, code, message, [("retry-after", str(retry))])
        try:
            # The body is the record: it decoded as one JSON object, which is all the
            # loader needs (re-encoding it would cost more than it normalises).
            try:
                await self._s.append(
                    Envelope(received_ms, DOOR, database, table, self._s.key_hash(key), body),
                    screened=True,
                )
            except HTTPError as e:  # the journal refused: nothing was stored
                raise DoorError(503, JournalDown.code, e.message, e.headers) from None
            request = Request(service, table, event, keys, public)
            try:
                answer = await self._engine.decide(request, body, self._view.generation)
            except StoreUnavailable as e:
                log.error("p13n store unavailable", extra={"code": e.code, "error": str(e)})
                raise DoorError(500, e.code, f"{e.store} unavailable; retry later") from None
            except Refused as e:
                raise _bad(e.code, f"({e})") from None
            except Exception as e:
                log.error("p13n engine error", extra={"error": repr(e)})
                raise DoorError(500, 9999, "unexpected error") from None
        finally:
            self._limiter.done()
        self._decisions.add(received_ms, account, service.name, database, table, keys, answer)
        return 200, [*_JSON, *allow] if allow else _JSON, answer

    def _admit(
        self,
        scope: Scope,
        database: str,
        table: str,
        key: str | None,
        body: bytes,
        public: bool,
    ) -> tuple[int, Service, dict[str, Any], list[str]]:
        """Every check before the event is stored, in the order the codes are given."""
        now = time.monotonic()
        view = self._view
        try:
            view.refresh(now)
        except ConfigStoreDown as e:
            raise DoorError(500, e.code, "configuration store unavailable; retry later") from None
        self._configure(view)
        if media_type(scope.headers.get("content-type")) != MEDIA_TYPE:
            raise DoorError(415, 415, f"Content-Type must be {MEDIA_TYPE}")
        account = self._account(key, database, now)
        token = self._token(scope.headers.get("wp13n-token"), now)
        if token.account_id != account:
            raise _bad(3002)
        service = view.services.get(token.service)
        if service is None:
            raise _bad(3001, f"(service {token.service!r} is not configured)")
        if service.database != database or table not in service.event_tables:
            raise _bad(3001, f"({database}.{table} is not an event table of {service.name!r})")
        if token.public != public:
            which = (
                "a public token needs /public/" if token.public else "/public/ needs a public token"
            )
            raise _bad(3006, f"({which})")
        if public:
            _check_origin(scope.headers.get("origin"), service)
        if token.allow_ips and not tokens.allowed(
            self._proxies.request_ip(scope), self._nets(token)
        ):
            raise _bad(3005)
        event = parse_event(body, self._s.settings.max_json_depth)
        too_wide = columns_refusal(event, self._s.settings.max_table_columns)
        if too_wide is not None:
            raise _bad(3004, f"({too_wide})")
        keys = service.event_keys(event)
        if not keys:
            columns = ", ".join(r.column for r in service.keys)
            raise _bad(3004, f"(no identity key: send one of {columns})")
        return account, service, event, keys

    def _nets(self, token: TokenInfo) -> list[tokens.Network]:
        nets = self._networks.get(token.token_hash)
        if nets is None:
            if len(self._networks) > 10_000:
                self._networks.clear()
            nets = self._networks[token.token_hash] = tokens.networks(token.allow_ips)
        return nets

    def _configure(self, view: View) -> None:
        if view.generation == self._configured:
            return
        self._configured = view.generation
        limits = view.limits
        self._limiter.configure(limits.events_per_second, limits.concurrency, time.monotonic())
        self._engine.set_timeout(limits.store_timeout_ms / 1000)

    def _account(self, key: str | None, database: str, now: float) -> int:
        if key is None:
            raise DoorError(401, 401, "missing Authorization: TD1 <API key>")
        try:
            info = self._directory.key(self._s.key_hash(key), now)
            owner = None if info is None else self._directory.database_owner(database, now)
        except sa.exc.SQLAlchemyError as e:
            down = KeyStoreDown(str(e))
            raise DoorError(500, down.code, "API key directory unavailable; retry later") from None
        decision = access.decide(
            info,
            access.Action.WRITE,
            database,
            owner,
            auto_create=self._s.settings.auto_create_database_for_master,
        )
        if isinstance(decision, access.Refused):
            if decision.reason in access.KEY_REFUSALS:
                raise DoorError(401, 401, "invalid API key")
            raise DoorError(403, 403, decision.message)
        return decision.account_id

    def _token(self, raw: str | None, now: float) -> TokenInfo:
        if not raw:
            raise _bad(3000)
        parsed = self._parsed(raw)
        if parsed is None:
            raise _bad(3003)
        try:
            info = self._view.token(parsed.digest, now)
        except ConfigStoreDown as e:
            raise DoorError(500, e.code, "configuration store unavailable; retry later") from None
        if info is None or info.revoked:
            raise _bad(3001)
        return info


def parse_event(body: bytes, max_depth: int) -> dict[str, Any]:
    """The event a request carries: one JSON object nested at most ``max_depth`` deep,
    else 3004."""
    try:
        event = _event_decoder.decode(body)
    except msgspec.DecodeError:
        raise _bad(3004, "(the body is not JSON)") from None
    except RecursionError:
        raise _bad(3004, f"(the body nests deeper than {max_depth} levels)") from None
    if not isinstance(event, dict):
        raise _bad(3004, "(the body must be one JSON object)")
    if deeper_than(body, max_depth):
        raise _bad(3004, f"(the body nests deeper than {max_depth} levels)")
    return event


def _td1_key(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    if scheme.upper() != "TD1" or not key.strip():
        return None
    return key.strip()


def _check_origin(origin: str | None, service: Service) -> None:
    if not origin or _ORIGIN.fullmatch(origin) is None:
        raise _bad(3007)
    if service.allowed_origins and origin.rstrip("/") not in service.allowed_origins:
        raise _bad(3007, f"({origin} is not an allowed origin)")
