"""The CDP door (``cdp.in.*``, ``cdp-*.in.*``, or ``--cdp-port``): profile lookups.

``GET /cdp/lookup/collect/segments?version=2&token=T1,T2&key.<column>=<value>`` is what
td-js-sdk's ``fetchUserSegments`` and the Android and iOS SDKs' ``fetchUserSegments``
send (td-js-sdk with ``credentials: 'include'`` and ``Content-Type: application/json``,
so browsers preflight it). The answer is a JSON array with one entry per token that
found a person, in token order (realtime/lookup.py has the entry's shape); nobody
found is ``[]``. It is read from what tdedge already keeps: the real-time profiles the
p13n door updates and the batch segments and imported attributes refreshed from the
lake. Lookups write nothing.

Tokens are lookup tokens (``tdedge p13n tokens create SERVICE --lookup NAME``), kept
hashed; each answers for one ``lookups:`` entry of its service, which names the key
column people are looked up by and the segments and attributes it may reveal. A token
looking up by ``td_global_id`` takes the value from tdedge's global-id cookie, which
the browser sends because of the credentials, never from the query.

Errors are ``{"error": <reason>, "message": …, "status": <HTTP status>}`` — the shape
the mobile SDKs read — with CORS headers, so a page can read them too. Every answer
is counted in ``tdedge_cdp_lookups_total``. Refused lookups leave no import-error
row: a lookup carries no record, so nothing of the sender's is lost.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa

from tdedge import metrics
from tdedge.edge.cookies import GLOBAL_ID_COOKIE, cookie_value
from tdedge.edge.cors import CDP, VARY, Cors
from tdedge.edge.http import JSON, HTTPError, Protocol_, Response, Scope, encode_json
from tdedge.edge.services import Counters, Services
from tdedge.realtime import tokens
from tdedge.realtime.batch import BatchStore
from tdedge.realtime.config import COLUMN
from tdedge.realtime.errors import StoreUnavailable
from tdedge.realtime.lookup import GLOBAL_ID_COLUMN, Lookup, entry
from tdedge.realtime.profile import key_of
from tdedge.realtime.service import NO_FACTS, Service
from tdedge.realtime.store import ProfileStore
from tdedge.realtime.tokens import LookupTokenInfo
from tdedge.realtime.view import View

log = logging.getLogger("tdedge.cdp")

DOOR = "cdp"
LOOKUP_PATH = "/cdp/lookup/collect/segments"
VERSION = "2"
KEY_PREFIX = "key."
# Query parameters one lookup may carry: tokens go in one, keys one each.
MAX_PARAMETERS = 100
NO_STORE = ("cache-control", "no-store")  # an answer is about one person
_JSON = ("content-type", JSON)


@dataclass(frozen=True, slots=True)
class LookupQuery:
    """What a lookup asks: token hashes (distinct, in order) and ``key.<column>`` values."""

    digests: list[bytes]
    keys: dict[str, str]


def parse_query(query_string: str, max_tokens: int) -> LookupQuery:
    """The lookup a query string asks for, or the 400 that says what is wrong with it."""
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, max_num_fields=MAX_PARAMETERS)
    except ValueError:
        raise HTTPError(
            400, "invalid_query", f"more than {MAX_PARAMETERS} query parameters"
        ) from None
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    if "callback" in params:
        raise HTTPError(
            400,
            "jsonp_not_supported",
            "JSONP (callback=) is not served: call it with fetch or XMLHttpRequest, "
            "as td-js-sdk 4 and the mobile SDKs do",
        )
    if params.get("version", [""])[-1] != VERSION:
        raise HTTPError(
            400, "unsupported_version", f"send version={VERSION}: the only version answered"
        )
    # One comma-separated parameter (td-js-sdk leaves the commas as they are; the mobile
    # SDKs encode them), or several.
    raw = [t.strip() for value in params.get("token", []) for t in value.split(",")]
    given = list(dict.fromkeys(t.lower() for t in raw if t))  # letter case is no difference
    if not given:
        raise HTTPError(400, "missing_token", "send token=<lookup token>[,<lookup token>…]")
    if len(given) > max_tokens:
        raise HTTPError(
            400, "too_many_tokens", f"{len(given)} tokens; one lookup takes at most {max_tokens}"
        )
    digests: list[bytes] = []
    for at, token in enumerate(given, 1):
        digest = tokens.parse_lookup(token)
        if digest is None:
            hint = (
                " (a WP13n-Token is for the p13n door)" if tokens.parse(token) is not None else ""
            )
            raise HTTPError(
                400,
                "invalid_token",
                f"token {at} of {len(given)} is not a lookup token{hint}: "
                "`tdedge p13n tokens create SERVICE --lookup NAME` makes one",
            )
        digests.append(digest)
    keys: dict[str, str] = {}
    for name, values in params.items():
        if not name.startswith(KEY_PREFIX):
            continue  # version, token, and what clients add (cache busters)
        column = name[len(KEY_PREFIX) :]
        if COLUMN.fullmatch(column) is None:
            raise HTTPError(
                400, "invalid_key", f"{name[:140]!r}: a key column is letters, digits and _"
            )
        if len(values) > 1:
            raise HTTPError(400, "duplicate_key", f"{name} is given {len(values)} times")
        keys[column] = values[0]
    return LookupQuery(digests, keys)


@dataclass(frozen=True, slots=True)
class _Asked:
    """One token of a lookup, resolved against the configuration."""

    token: LookupTokenInfo
    service: Service
    lookup: Lookup


class CdpDoor:
    name = DOOR

    # Opened on the first lookup (``_open``), like the p13n door's stores: a store that
    # cannot be opened answers 503 here and never takes the worker's other doors down.
    _view: View
    _profiles: ProfileStore
    _batch: BatchStore

    def __init__(self, services: Services, clock: Callable[[], float] = time.time) -> None:
        s = services.settings
        self._s = services
        self._clock = clock
        self._cors = Cors(s.cors_origins, CDP)
        self._outcomes = Counters(metrics.CDP_LOOKUPS)
        self._opened = False

    def route(self, path: str) -> str | None:
        return "lookup" if path == LOOKUP_PATH else None

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        return self._error(error, self._cors.headers(scope.headers.get("origin")))

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        origin = scope.headers.get("origin")
        if scope.method == "OPTIONS":
            return self._cors.preflight(origin)
        allow = self._cors.headers(origin)
        try:
            if scope.method not in ("GET", "HEAD"):
                raise HTTPError(405, "method_not_allowed", "use GET", headers=[("allow", "GET")])
            body = self._lookup(scope, origin)
        except HTTPError as e:
            log.debug("lookup refused", extra={"reason": e.code, "detail": e.message})
            if e.code == "origin_not_allowed":
                allow = [VARY]  # the page of a foreign origin may not read the answer
            return self._error(e, allow)
        return 200, [_JSON, NO_STORE, *allow], body

    def _error(self, e: HTTPError, allow: list[tuple[str, str]]) -> Response:
        self._outcomes.inc(e.code)
        error = {"error": e.code, "message": e.message, "status": e.status}
        return e.status, [_JSON, NO_STORE, *e.headers, *allow], encode_json(error)

    def _lookup(self, scope: Scope, origin: str | None) -> bytes:
        query = parse_query(scope.query_string, self._s.settings.cdp_max_tokens)
        self._open()
        now = time.monotonic()
        asked = self._resolve(query, origin, now)
        columns = {a.lookup.column for a in asked}
        unknown = sorted(set(query.keys) - columns)
        if unknown:
            raise HTTPError(
                400,
                "unknown_key",
                f"key.{unknown[0]} is not what these tokens look people up by "
                f"(they take: {', '.join(f'key.{c}' for c in sorted(columns))})",
            )
        global_id = cookie_value(scope.headers.items(), GLOBAL_ID_COOKIE)
        values = [
            global_id if a.lookup.column == GLOBAL_ID_COLUMN else query.keys.get(a.lookup.column)
            for a in asked
        ]
        if all(v is None for v in values):
            wanted = sorted(columns - {GLOBAL_ID_COLUMN})
            raise HTTPError(
                400,
                "missing_key",
                "nothing to look up: send "
                + " or ".join(f"key.{c}=<value>" for c in wanted)
                + (
                    f"{' or ' if wanted else ''}the {GLOBAL_ID_COOKIE} cookie "
                    "(td_global_id lookups read it, with credentials)"
                    if GLOBAL_ID_COLUMN in columns
                    else ""
                ),
            )
        now_ms = int(self._clock() * 1000)
        found: list[dict[str, Any]] = []
        for a, value in zip(asked, values, strict=True):
            if value is None:
                self._outcomes.inc("no_key")
                continue
            answer = self._find(a, value, now_ms)
            self._outcomes.inc("not_found" if answer is None else "found")
            if answer is not None:
                found.append(answer)
        return encode_json(found)

    def _resolve(self, query: LookupQuery, origin: str | None, now: float) -> list[_Asked]:
        view = self._view
        try:
            view.refresh(now)
            infos = [view.lookup_token(d, now) for d in query.digests]
        except StoreUnavailable as e:
            raise self._unavailable(e) from None
        asked: list[_Asked] = []
        count = len(query.digests)
        for at, info in enumerate(infos, 1):
            if info is None or info.revoked:
                raise HTTPError(
                    401, "unknown_token", f"token {at} of {count} is not known or was revoked"
                )
            service = view.services.get(info.service)
            lookup = None if service is None else service.lookups.get(info.lookup)
            if service is None or lookup is None:
                raise HTTPError(
                    401,
                    "unknown_token",
                    f"token {at} of {count} answers for lookup {info.lookup!r} of service "
                    f"{info.service!r}, which the configuration no longer has",
                )
            allowed = service.allowed_origins
            if origin is not None and allowed and origin.rstrip("/") not in allowed:
                raise HTTPError(
                    403,
                    "origin_not_allowed",
                    f"origin {origin} is not in service {service.name!r}'s allowed_origins",
                )
            asked.append(_Asked(info, service, lookup))
        return asked

    def _find(self, asked: _Asked, raw: str, now_ms: int) -> dict[str, Any] | None:
        """One token's entry. The reads run on the event loop: each is one indexed
        statement on a WAL database, where readers never wait for the writer."""
        service, lookup = asked.service, asked.lookup
        value = lookup.key_value(raw)
        if value is None:
            return None  # no profile key can hold it
        key = key_of(lookup.column, value)
        try:
            found = self._profiles.find(service.name, [key])
            profile = found[0] if found else None
            if profile is not None:
                service.tidy(profile, now_ms)  # a decoded copy: the store is not written
            keys = profile.keys if profile is not None else [key]
            facts = (
                self._batch.cached_facts(service.name, keys, now_ms)
                if service.needs_facts
                else NO_FACTS
            )
        except StoreUnavailable as e:
            raise self._unavailable(e) from None
        return entry(service, lookup, value, profile, facts, str(asked.token.instance_id), now_ms)

    def _unavailable(self, e: StoreUnavailable) -> HTTPError:
        log.error("cdp lookup: store unavailable", extra={"store": e.store, "error": str(e)})
        return HTTPError(
            503,
            "lookup_unavailable",
            f"the {e.store} is unavailable; retry later",
            headers=[("retry-after", str(self._s.settings.retry_after_s))],
        )

    def _open(self) -> None:
        if self._opened:
            return
        try:
            registry = self._s.registry
            profiles = self._s.profiles
            batch = self._s.batch
        except StoreUnavailable as e:
            raise self._unavailable(e) from None
        except (OSError, sqlite3.Error, sa.exc.SQLAlchemyError) as e:
            log.error("cdp lookup stores cannot be opened", extra={"error": str(e)})
            raise HTTPError(
                503,
                "lookup_unavailable",
                "profile lookups are unavailable; retry later",
                headers=[("retry-after", str(self._s.settings.retry_after_s))],
            ) from None
        self._view = View(registry)
        self._profiles = profiles
        self._batch = batch
        self._opened = True
        # What was just imported and opened lives as long as the worker (see EdgeApp).
        gc.freeze()
