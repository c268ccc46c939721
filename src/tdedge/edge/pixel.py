"""The tracking pixel (spec/tracking-pixel.md), served by the legacy door.

``GET /postback/v3/event/{db}/{table}?td_format=pixel&td_write_key=…&k=v…`` (also
``HEAD``, and ``POST`` with the parameters as a form body) stores one record:

- every parameter except the special ones is a **string** column (a repeated name keeps
  its last value, as form bodies do);
- ``td_record_time`` becomes ``time`` (the loader reads a string holding unix seconds;
  anything else keeps the arrival time and lands in ``td_type_conflicts``);
- ``td_global_id=td_global_id``, ``td_ip=td_ip``, ``td_ua=td_ua`` add those columns with
  the global id (server cookie, minted when absent), the client address and the
  User-Agent. With any other value they are ordinary columns holding what was sent;
- the answer is the 43-byte transparent GIF, ``no-store``, whatever the key: a missing,
  unknown or refused key (or a bad table name) sends the record to the import errors,
  never changes the image — a page cannot do anything with a pixel's error anyway;
- a parameter whose %-escapes are not UTF-8 is kept with U+FFFD in their place, and
  the record goes to the import errors with reason ``invalid_encoding`` (GIF all the
  same): replaced text is not what the page sent, so it never reaches a table;
- ``td_redirect`` answers ``302`` to that URL instead (see redirect.py for the allowed
  hosts and the ``td_global_id`` placeholder); a refused redirect is ``400`` but the
  record is kept all the same.

The record is durable before any answer, like every other door's (503 otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

import msgspec

from tdedge.edge.http import HTTPError, Response, Scope
from tdedge.edge.identity import Identity
from tdedge.edge.memo import Memo
from tdedge.edge.peers import TrustedProxies
from tdedge.edge.redirect import RedirectPolicy, needs_global_id, substitute
from tdedge.edge.services import Services
from tdedge.journal.envelope import Envelope
from tdedge.names import is_valid_name, normalize

DOOR = "pixel"
POSTBACK_PREFIX = "/postback/v3/event/"

# nginx's empty_gif, byte for byte: 1x1, colour 1 transparent.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x01\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x01\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02L\x01\x00;"
)
NO_STORE = ("cache-control", "no-store")
GIF_HEADERS = [("content-type", "image/gif"), NO_STORE]

# Parameters that are never columns.
CONTROL = frozenset({"td_format", "td_write_key", "td_record_time", "td_redirect"})
# Parameters that are replaced by the server's value when they equal their own name.
GLOBAL_ID, IP, UA = "td_global_id", "td_ip", "td_ua"
# A name that cannot be a table still leaves an import error; this much of it is kept.
MAX_KEPT_NAME = 256

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Params:
    """Parameters in order, and whether every %-escape in them was UTF-8."""

    pairs: list[tuple[str, str]]
    utf8: bool = True

    def __add__(self, other: Params) -> Params:
        return Params(self.pairs + other.pairs, self.utf8 and other.utf8)

    def is_pixel(self) -> bool:
        return ("td_format", "pixel") in self.pairs


@dataclass(slots=True)
class PixelRequest:
    """What the parameters ask for, before the server fills anything in."""

    columns: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    record_time: str | None = None
    redirect: str | None = None
    wants_global_id: bool = False
    wants_ip: bool = False
    wants_ua: bool = False


def pixel_params(query_string: str) -> Params | None:
    """The URL's parameters if it asks for the pixel (``td_format=pixel``), else None."""
    if "td_format=pixel" not in query_string:
        return None
    params = query_params(query_string)
    return params if params.is_pixel() else None


def parse_params(params: Iterable[tuple[str, str]]) -> PixelRequest:
    req = PixelRequest()
    for name, value in params:
        if name in CONTROL:
            if name == "td_write_key":
                req.key = value.strip() or None
            elif name == "td_record_time":
                req.record_time = value
            elif name == "td_redirect":
                req.redirect = value
            continue
        # The placeholder asks for the server's value; a later real value wins, as the
        # last of repeated parameters does.
        placeholder = value == name
        if name == GLOBAL_ID:
            req.wants_global_id = placeholder
        elif name == IP:
            req.wants_ip = placeholder
        elif name == UA:
            req.wants_ua = placeholder
        if placeholder and name in (GLOBAL_ID, IP, UA):
            req.columns.pop(name, None)
        else:
            req.columns[name] = value
    return req


def pixel_record(req: PixelRequest, global_id: str | None, ip: str | None, ua: str | None) -> bytes:
    """The stored record: string columns, the server's values, ``time`` if given."""
    record: dict[str, str] = dict(req.columns)
    if req.wants_global_id and global_id is not None:
        record[GLOBAL_ID] = global_id
    if req.wants_ip and ip is not None:
        record[IP] = ip
    if req.wants_ua and ua is not None:
        record[UA] = ua
    if req.record_time is not None:
        record["time"] = req.record_time
    return _encode(record)


def query_params(query_string: str) -> Params:
    """``parse_qsl(…, keep_blank_values=True)``, unquoting only the parts that need it,
    and whether every %-escape was UTF-8 (``parse_qsl`` would replace the others).

    The pixel's hot path: most parameters are plain ASCII, and ``parse_qsl`` unquoting
    every one of them was half the cost of a pixel request. The quoted ones (the write
    key's ``%2F`` above all) repeat from request to request, so their unquoted form is
    remembered.
    """
    out: list[tuple[str, str]] = []
    utf8 = True
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in name or "+" in name:
            name, ok = _unquoted(name)
            utf8 = utf8 and ok
        if "%" in value or "+" in value:
            value, ok = _unquoted(value)
            utf8 = utf8 and ok
        out.append((name, value))
    return Params(out, utf8)


def form_params(body: bytes) -> Params:
    """The fields of a form body, which may hold bytes that are not UTF-8 too."""
    try:
        text, utf8 = body.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8 = body.decode("utf-8", "replace"), False
    fields = query_params(text)
    return Params(fields.pairs, fields.utf8 and utf8)


def _unquote(text: str) -> tuple[str, bool]:
    """``unquote_plus``, and whether its %-escapes were UTF-8 (else replaced by U+FFFD)."""
    try:
        return unquote_plus(text, errors="strict"), True
    except UnicodeDecodeError:
        return unquote_plus(text, errors="replace"), False


_unquoted = Memo(_unquote)


class Pixel:
    def __init__(self, services: Services) -> None:
        settings = services.settings
        self._s = services
        self._redirects = RedirectPolicy(settings.redirect_hosts)
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._identity = Identity(settings.cookie_domain)

    async def answer(self, scope: Scope, params: Params) -> Response:
        s = self._s
        received_ms = time.time_ns() // 1_000_000
        req = parse_params(params.pairs)
        header_key = scope.headers.get("x-td-write-key")
        key = str(header_key).strip() if header_key else req.key
        database, table, reject = _names(scope.path)

        extra: list[tuple[str, str]] = []
        global_id = None
        if req.wants_global_id or (req.redirect is not None and needs_global_id(req.redirect)):
            global_id, cookie = self._identity.global_id(scope)
            extra.append(cookie)
        ip = self._proxies.request_ip(scope) if req.wants_ip else None
        ua = str(scope.headers.get("user-agent") or "") if req.wants_ua else None
        record = pixel_record(req, global_id, ip, ua)

        key_hash = s.key_hash(key) if key else b""
        if not reject and not params.utf8:
            reject = "invalid_encoding"
        if not reject:
            if key is None:
                reject = "missing_key"
            elif s.auth is not None:
                reject = s.auth.refusal(key_hash, database) or ""
        refused_redirect = None
        if req.redirect is not None:
            try:
                self._redirects.check(req.redirect)
            except HTTPError as e:
                refused_redirect = e
        if reject:
            # Kept like every refusal: capped, within the source's budget.
            await s.refuse(DOOR, received_ms, database, table, key_hash, record, reject, scope)
        else:
            await s.append(Envelope(received_ms, DOOR, database, table, key_hash, record))
        if refused_redirect is not None:
            refused_redirect.headers.extend([NO_STORE, *extra])
            raise refused_redirect
        if req.redirect is not None:
            location = substitute(req.redirect, global_id) if global_id else req.redirect
            return 302, [("location", location), NO_STORE, *extra], b""
        return 200, [*GIF_HEADERS, *extra], GIF


def _names(path: str) -> tuple[str, str, str]:
    """``(database, table, reject)``: names that break the rule become an import error."""
    database, _, table = path[len(POSTBACK_PREFIX) :].partition("/")
    if is_valid_name(database) and is_valid_name(table):
        return normalize(database), normalize(table), ""
    return database[:MAX_KEPT_NAME], table[:MAX_KEPT_NAME], "invalid_name"
