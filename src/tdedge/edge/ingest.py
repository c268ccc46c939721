"""The Data Ingestion API: ``POST /{db}/{table}`` on the records door, ``{"events":[…]}``.

What td-js-sdk 4 and the mobile SDKs send (reference/clients.md):

- ``Content-Type`` ``application/vnd.treasuredata.v1+json``, ``…v1.js+json`` (td-js-sdk
  in signed mode with a global id) or ``…v1.mobile+json``; anything else is 415.
- ``Content-Encoding: gzip`` (mobile SDKs): inflated in bounded steps, so a small
  compressed body can never make the server hold more than the request limit, at most
  ``Settings.gzip_max_members`` members (inflation.py), off the event loop unless tiny,
  and only once the credentials passed every check the edge can make.
- 1 to 500 events (else 400), each at most 1 MiB of JSON, at most 5 MiB per request
  (413) — MiB, the generous reading of the documents' "1 MB" and "5 MB".

Each event gets its own receipt, in order: ``{"success":true}`` or ``{"success":false,
"error":{"name","description"}}`` with a name the mobile SDKs know — they drop events
with ``InvalidCollectionNameError``, ``InvalidPropertyNameError`` or
``InvalidPropertyValueError`` and retry any other failure, so an event that can never
succeed must carry one of those three, or the SDK would resend it forever:

- a bad database or table name → ``InvalidCollectionNameError`` (every event);
- a key that cannot be a column (empty, over 255 characters, control characters,
  tdedge's own ``td_type_conflicts`` or ``_tdedge_…``) → ``InvalidPropertyNameError``;
- an event that is not a JSON object, is over 1 MiB, or nests deeper than
  ``Settings.max_json_depth`` → ``InvalidPropertyValueError``. A body too deep for the
  decoder to split is split all the same: each event nested past the limit is cut out
  first (``split_events``), so the request's other events are still stored.
- an event with more keys than a table may have columns (``max_table_columns``, the
  columns the server adds counted) → ``InvalidPropertyNameError``: the keys past the
  limit cannot be columns.

Refused events are journaled with a reason code (they show in the import errors);
accepted ones are stored as sent — ``td_uuid`` (the SDKs' device id) and ``uuid``
included — and each gets tdedge's own id, a version-7 UUID (``uuids``) that the
journal entry carries (``Envelope.record_id``) and the loader writes to the
``_tdedge_id`` column. An event's ``record_uuid`` (``Settings.record_uuid_column``)
goes with it too (``Envelope.record_uuid``): the loader stores a resent event once.
For ``…v1.js+json`` and ``…v1.mobile+json`` the server fills ``td_ip`` (the client's
address) unless the event carries a real value, and for ``…v1.js+json`` it replaces
the ``td_global_id: "td_global_id"`` placeholder with the id from its cookie.

The parsing below is pure (no I/O, no clock); ``IngestAPI`` does the HTTP and journal.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from tdedge.edge import inflation, nesting
from tdedge.edge.http import JSON_HEADERS, HTTPError, Protocol_, Response, Scope
from tdedge.edge.http import read_body as read_raw_body
from tdedge.edge.offload import INLINE_PARSE_BYTES
from tdedge.edge.refusals import kept_body
from tdedge.edge.services import Services
from tdedge.journal.envelope import Envelope
from tdedge.loader.limits import TOO_MANY_COLUMNS, columns_refusal
from tdedge.loader.schema import fold, usable_name
from tdedge.names import NAME_RULE, RECORD_ID, is_valid_name, normalize

DOOR = "ingest"
MAX_EVENTS = 500
MAX_EVENT_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 5 * 1024 * 1024
# A name that cannot be a table still leaves an import error; this much of it is kept.
MAX_KEPT_NAME = 256
# Events of ``{"events":[…]}`` open this deep: one level for the object, one for the array.
EVENT_LEVEL = 3
# The longest record_uuid the loader de-duplicates by (a UUID is 36 characters). A longer
# value is stored as sent, but not carried in the journal entry a second time.
MAX_RECORD_UUID = 255
# gzip bodies up to this size inflate on the event loop (at most ~1 MiB of output, a
# few milliseconds); larger ones on the offload threads.
INLINE_GZIP_BYTES = 1024


class Mode(enum.Enum):
    PLAIN = "v1+json"
    JS = "v1.js+json"  # td-js-sdk, signed mode with global id
    MOBILE = "v1.mobile+json"


MEDIA_TYPES = {f"application/vnd.treasuredata.{m.value}": m for m in Mode}

# Error names the mobile SDKs know, and the import-error reason each event gets.
COLLECTION_ERROR = "InvalidCollectionNameError"
NAME_ERROR = "InvalidPropertyNameError"
VALUE_ERROR = "InvalidPropertyValueError"


class Batch(msgspec.Struct):
    events: list[msgspec.Raw]


@dataclass(frozen=True, slots=True)
class DeepEvent:
    """An event nested past the depth limit, cut out of its body before splitting."""

    text: memoryview  # its text, for the import errors
    limit: int


Event = msgspec.Raw | DeepEvent


@dataclass(frozen=True, slots=True)
class Events:
    items: list[Event]
    # The depth limit every event must be measured against; None when the body holds
    # too few brackets for any event to pass it.
    max_depth: int | None


_batch_decoder = msgspec.json.Decoder(Batch)
_event_decoder = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode

SUCCESS = b'{"success":true}'
_QUOTE = ord('"')


@dataclass(frozen=True, slots=True)
class Failure:
    name: str  # the SDK-facing error name
    description: str
    reason: str  # the import-error reason code


@dataclass(frozen=True, slots=True)
class Fill:
    """What the server adds to each accepted event."""

    ip: str | None = None  # td_ip, when the mode asks for it
    global_id: str | None = None  # replaces the td_global_id placeholder


def media_mode(content_type: str | None) -> Mode:
    media = (content_type or "").partition(";")[0].strip().lower()
    mode = MEDIA_TYPES.get(media)
    if mode is None:
        raise HTTPError(
            415,
            "unsupported_media_type",
            "Content-Type must be application/vnd.treasuredata.v1+json "
            "(or v1.js+json, v1.mobile+json)",
        )
    return mode


def content_encoding(scope: Scope) -> bool:
    """Whether the body is gzip (``Content-Encoding: gzip``); 415 for other encodings."""
    encoding = (scope.headers.get("content-encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise HTTPError(415, "unsupported_encoding", "Content-Encoding must be gzip or none")


def split_events(body: bytes, max_depth: int) -> Events:
    """The events of a ``{"events":[…]}`` body; 400 for anything else.

    Each event stays raw JSON text: ``check_event`` sizes and decodes it on its own, and
    plain ``v1+json`` events are stored as that text.
    """
    items: list[Event]
    try:
        items = list(_batch_decoder.decode(body).events)
    except RecursionError:
        items = _split_deep(body, max_depth)
    except msgspec.DecodeError as e:
        raise _invalid_body(e) from None
    if not items:
        raise HTTPError(400, "no_events", "events is empty: send 1 to 500 events")
    if len(items) > MAX_EVENTS:
        raise HTTPError(
            400, "too_many_events", f"{len(items)} events; send at most {MAX_EVENTS} per request"
        )
    # An event's depth is at most the body's opening brackets less the two around it.
    deep = nesting.opening_brackets(body) > max_depth + EVENT_LEVEL - 1
    return Events(items, max_depth if deep else None)


def _invalid_body(e: msgspec.DecodeError) -> HTTPError:
    return HTTPError(400, "invalid_body", f'body must be {{"events":[…]}} in JSON: {e}')


def _split_deep(body: bytes, max_depth: int) -> list[Event]:
    """Split a body nested too deep for the decoder (``cut_deep``)."""
    cut, originals = cut_deep(body, max_depth)
    try:
        raws = _batch_decoder.decode(cut).events
    except RecursionError:
        raise nesting.too_deep(max_depth) from None
    except msgspec.DecodeError as e:
        raise _invalid_body(e) from None
    return restore_deep(raws, originals, max_depth)


def cut_deep(body: bytes, max_depth: int) -> tuple[bytearray, dict[bytes, memoryview]]:
    """``body`` with each value that opens at an event's level (``EVENT_LEVEL``: events
    of ``{"events":[…]}`` and of the pre-1.0 ``{"db.table":[…]}`` alike) and nests past
    the limit replaced by a placeholder string of its own length, so the decoder meets
    a shallow body; and the original text of each placeholder (``restore_deep``)."""
    cut = bytearray(body)
    whole = memoryview(body)
    originals: dict[bytes, memoryview] = {}
    spans = nesting.deep_values(body, EVENT_LEVEL, max_depth + EVENT_LEVEL - 1)
    for k, (start, end) in enumerate(spans):
        mark = b'"\\u0000%d"' % k
        # A deep value is at least twice the limit long: room for a mark past 8 levels.
        if len(mark) <= end - start:
            cut[start:end] = mark.ljust(end - start)
            originals[mark] = whole[start:end]
    return cut, originals


def restore_deep(
    raws: Iterable[msgspec.Raw], originals: dict[bytes, memoryview], max_depth: int
) -> list[Event]:
    """The events a ``cut_deep`` body decoded to, the placeholders back as
    ``DeepEvent``s, each once. A client's own string event that reads like a
    placeholder is refused all the same (a string is not an object)."""
    items: list[Event] = []
    for raw in raws:
        text = memoryview(raw)
        original = originals.pop(bytes(text), None) if text[0] == _QUOTE else None
        items.append(raw if original is None else DeepEvent(original, max_depth))
    return items


def check_event(raw: Event, max_depth: int | None = None) -> dict[str, Any] | Failure:
    """The decoded event, or why it can never be stored; its depth is measured against
    ``max_depth`` unless that is None."""
    if isinstance(raw, DeepEvent):
        return _too_deep(raw.limit)
    if len(raw) > MAX_EVENT_BYTES:
        return Failure(
            VALUE_ERROR, f"event is larger than {MAX_EVENT_BYTES} bytes", "event_too_large"
        )
    try:
        event = _event_decoder.decode(raw)
    except msgspec.DecodeError:
        return Failure(VALUE_ERROR, "event must be a JSON object", "not_an_object")
    except RecursionError:
        return _too_deep(max_depth)
    if max_depth is not None and nesting.deeper_than(memoryview(raw), max_depth):
        return _too_deep(max_depth)
    if _good_names.issuperset(event):  # one C loop for the usual case
        return event
    for key in event:
        if key not in _good_names and not _learn_name(key):
            return Failure(
                NAME_ERROR,
                f"property {key[:64]!r} cannot be a column (1-255 characters, no control "
                "characters; td_type_conflicts and names starting with _tdedge_ are "
                "tdedge's own)",
                "invalid_property_name",
            )
    return event


def fits_table(
    checked: dict[str, Any] | Failure, limit: int, added: tuple[str, ...]
) -> dict[str, Any] | Failure:
    """An event with the columns the server adds (``added``) must fit in a table: its
    keys past ``max_table_columns`` cannot be columns (loader/limits.py)."""
    if isinstance(checked, Failure):
        return checked
    refusal = columns_refusal(checked, limit, added)
    return checked if refusal is None else Failure(NAME_ERROR, refusal, TOO_MANY_COLUMNS)


def _too_deep(limit: int | None) -> Failure:
    levels = f"{limit} levels" if limit is not None else "the decoder's limit"
    return Failure(VALUE_ERROR, f"event nests deeper than {levels}", nesting.TOO_DEEP)


# Property names already found usable. Events of one source repeat the same few names, so
# this turns the per-character check into one set lookup; bounded, as keys are client data.
_good_names: set[str] = set()
MAX_KNOWN_NAMES = 10_000


def _learn_name(key: str) -> bool:
    if not usable_name(fold(key)):
        return False
    if len(_good_names) >= MAX_KNOWN_NAMES:
        _good_names.clear()
    _good_names.add(key)
    return True


def kept(raw: Event, limit: int) -> bytes:
    """What an import-error row keeps of a refused event: its first ``limit`` bytes."""
    text = raw.text if isinstance(raw, DeepEvent) else memoryview(raw)
    return kept_body(text, limit)


def fill(event: dict[str, Any], extra: Fill) -> bytes:
    """The stored record: the event plus what the server adds."""
    if extra.ip is not None:
        ip = event.get("td_ip")
        if ip is None or ip == "td_ip":
            event["td_ip"] = extra.ip
    if extra.global_id is not None and event.get("td_global_id") == "td_global_id":
        event["td_global_id"] = extra.global_id
    return _encode(event)


def dedup_id(event: dict[str, Any], column: str) -> str:
    """The event's own id for de-duplication (its ``record_uuid``), or "" for none: a
    string of 1 to ``MAX_RECORD_UUID`` characters. Anything else is stored as sent and
    not de-duplicated."""
    found = event.get(column)
    if type(found) is str and 0 < len(found) <= MAX_RECORD_UUID:
        return found
    return ""


def receipt(failure: Failure) -> bytes:
    return _encode(
        {"success": False, "error": {"name": failure.name, "description": failure.description}}
    )


def receipts_body(receipts: list[bytes]) -> bytes:
    return b'{"receipts":[' + b",".join(receipts) + b"]}"


def uuids(n: int, now_ms: int, random: Callable[[int], bytes] = os.urandom) -> list[str]:
    """``n`` (≤ 4,096) distinct version-7 UUID strings (RFC 9562) for records received at
    ``now_ms``.

    Version 7: the arrival time in the top 48 bits, so ``_tdedge_id`` sorts by arrival. One
    read of the random source per request fills the random bits; the request's records
    then take consecutive values of the last three hex digits, from a random start low
    enough that counting never carries (RFC 9562 §6.2, method 2: the random part
    incremented within a millisecond). An id is then one string concatenation instead
    of a random read and five slices per record, which was a tenth of an ingest
    request's CPU.
    """
    if n > len(_HEX3):
        raise ValueError(f"at most {len(_HEX3)} ids per call")
    r = int.from_bytes(random(10))
    rand_a = r >> 68  # 12 bits
    rand_b_high = (r >> 54) & 0x3FFF  # 14 bits: the variant takes the other 2
    low = (r >> 6) & 0xFFFF_FFFF_FFFF  # 48 bits: 36 fixed per call, 12 that count
    t = now_ms & 0xFFFF_FFFF_FFFF
    head = f"{t >> 16:08x}-{t & 0xFFFF:04x}-7{rand_a:03x}-{0x8000 | rand_b_high:04x}-"
    head += f"{low >> 12:09x}"
    start = (low & 0xFFF) % (len(_HEX3) - n + 1)
    return [head + digits for digits in _HEX3[start : start + n]]


_HEX3 = [f"{i:03x}" for i in range(4096)]


def collection_names(path: str) -> tuple[str, str, bool]:
    """``(database, table, valid)`` from ``/{db}/{table}``; invalid names are kept, cut short."""
    database, _, table = path[1:].partition("/")
    if is_valid_name(database) and is_valid_name(table):
        return normalize(database), normalize(table), True
    return database[:MAX_KEPT_NAME], table[:MAX_KEPT_NAME], False


class IngestAPI:
    """One request: body → events → receipts, every event journaled in one group commit."""

    def __init__(self, services: Services) -> None:
        self._s = services

    async def handle(
        self,
        scope: Scope,
        proto: Protocol_,
        key: str | None,
        refused: HTTPError | None,
        fill_for: Callable[[Mode], Fill],
    ) -> Response:
        """Answer one request.

        ``refused`` is the door's verdict on the credentials (raised once the body is
        read, so the import error keeps it); ``fill_for`` gives what the server adds to
        the events in a mode.
        """
        s = self._s
        received_ms = time.time_ns() // 1_000_000
        database, table, valid = collection_names(scope.path)
        sent = b""  # the body as sent (compressed or not)
        gzipped = False
        try:
            # Everything that can be checked before inflating and parsing is: the
            # headers, the body's size, then the credentials.
            mode = media_mode(scope.headers.get("content-type"))
            gzipped = content_encoding(scope)
            sent = await read_raw_body(scope, proto, MAX_REQUEST_BYTES)
            if refused is not None:
                raise refused
            assert key is not None
            key_hash = s.key_hash(key)
            s.authorize(key, database)
            body = await self.inflate(sent) if gzipped else sent
            events = await self.split(body)
        except HTTPError as e:
            # A request refused whole: operators still see what it carried.
            if not e.body:
                e.body = inflation.head(sent, s.keep_bytes(e.code)) if gzipped else sent
            await s.keep_refused(DOOR, received_ms, database, table, key, e, scope)
            raise
        extra = fill_for(mode)
        adds = extra.ip is not None or extra.global_id is not None
        added = (RECORD_ID, "td_ip") if extra.ip is not None else (RECORD_ID,)
        uuid_column = s.settings.record_uuid_column
        envelopes: list[Envelope] = []
        receipts: list[bytes] = []
        refusals: list[str] = []  # the reasons of the events refused
        keep = s.settings.refused_keep_bytes
        ids = uuids(len(events.items), received_ms)
        for raw, uuid in zip(events.items, ids, strict=True):
            checked: dict[str, Any] | Failure
            if valid:
                checked = fits_table(
                    check_event(raw, events.max_depth), s.settings.max_table_columns, added
                )
            else:
                checked = Failure(
                    COLLECTION_ERROR, f"{database}.{table}: {NAME_RULE}", "invalid_name"
                )
            if isinstance(checked, Failure):
                receipts.append(receipt(checked))
                refusals.append(checked.reason)
                envelopes.append(
                    Envelope(
                        received_ms,
                        DOOR,
                        database,
                        table,
                        key_hash,
                        kept(raw, keep),
                        reject=checked.reason,
                    )
                )
            else:
                assert not isinstance(raw, DeepEvent)
                receipts.append(SUCCESS)
                # Plain events are stored as their own text: nothing to add to them.
                record = fill(checked, extra) if adds else bytes(raw)
                envelopes.append(
                    Envelope(
                        received_ms,
                        DOOR,
                        database,
                        table,
                        key_hash,
                        record,
                        record_id=uuid,
                        record_uuid=dedup_id(checked, uuid_column),
                    )
                )
        await s.append_many(envelopes)
        for reason in refusals:
            s.refusals.inc(DOOR, reason, "row")
        return 200, list(JSON_HEADERS), receipts_body(receipts)

    async def split(self, body: bytes) -> Events:
        depth = self._s.settings.max_json_depth
        if len(body) <= INLINE_PARSE_BYTES:
            return split_events(body, depth)
        return await self._s.offload.run(split_events, body, depth)

    async def inflate(self, raw: bytes) -> bytes:
        limit, members = MAX_REQUEST_BYTES, self._s.settings.gzip_max_members
        if len(raw) <= INLINE_GZIP_BYTES:
            return inflation.gunzip(raw, limit, members)
        return await self._s.offload.run(inflation.gunzip, raw, limit, members)
