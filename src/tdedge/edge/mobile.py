"""The pre-1.0 mobile SDKs' route: ``POST /android/v3/event`` and ``POST /ios/v3/event``.

td-android-sdk before 1.0 (February 2023) and td-ios-sdk before 1.0 sent their events
in the format of the Keen IO client they are built on, to ``/android/v3/event`` and
``/ios/v3/event`` of ``https://in.treasuredata.com`` unless told another endpoint:

- headers ``Content-Type: application/json``, ``X-TD-Write-Key: <key>``,
  ``X-TD-Data-Type: k``, and by default ``Content-Encoding: deflate`` — a zlib stream,
  as both SDKs make it (``DeflaterInputStream``; ``deflateInit2`` with 15 window bits);
- a body ``{"db.table": [event, …], …}``: each queued event under its collection,
  Android 400 events at most per request, iOS every event it holds;
- each event as the app added it plus what the SDK added: ``keen``
  (``{"timestamp": "2021-04-22T10:00:00.123+0900"}``, the time the app added it),
  ``#UUID`` (a random id per event) and, with ``enableServerSideUploadTimestamp``,
  ``#SSUT`` (``true``, or the name of a column).

The answer has the body's keys, each with one result per event in order —
``{"db.table": [{"success": true}, {"success": false, "error": {"name": …,
"description": …}}, …]}`` — and the SDKs delete the events that succeeded or failed
with ``InvalidCollectionNameError``, ``InvalidPropertyNameError`` or
``InvalidPropertyValueError``, keep the others, and send them again later. Any answer
but a 200 keeps them all.

Each event is checked, refused and journaled as on the Data Ingestion API (ingest.py:
the same limits, receipts, reason codes and import errors, door ``mobile``), after
being turned into what the SDKs send since 1.0 (``from_keen``), which the SDKs' own
upgrade of their stored events does alike:

- ``keen.timestamp`` gives ``time`` unless the event has its own; ``keen`` goes unless
  it holds more than a timestamp this can read (then it stays, as sent);
- ``#UUID`` becomes ``uuid`` (unless the event has a ``uuid`` already);
- ``#SSUT: true`` sets ``time`` to the time tdedge received the event, and
  ``#SSUT: "column"`` sets that column to it (unix seconds), as Treasure Data did.

A request may hold any number of events; the first 500 (``MAX_EVENTS``) are answered,
and the ones past them get a failure the SDKs keep for their next upload
(``TooManyEventsError``): an iOS app that queued thousands while offline uploads them
500 at a time instead of never, which a refusal of the whole request would mean.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from tdedge.edge import inflation, nesting
from tdedge.edge.auth import key_refusal, records_key
from tdedge.edge.http import JSON_HEADERS, HTTPError, Protocol_, Response, Scope
from tdedge.edge.http import read_body as read_raw_body
from tdedge.edge.ingest import (
    COLLECTION_ERROR,
    EVENT_LEVEL,
    INLINE_GZIP_BYTES,
    MAX_EVENTS,
    MAX_KEPT_NAME,
    MAX_REQUEST_BYTES,
    NAME_ERROR,
    SUCCESS,
    Event,
    Failure,
    check_event,
    cut_deep,
    dedup_id,
    fits_table,
    kept,
    receipt,
    restore_deep,
    uuids,
)
from tdedge.edge.offload import INLINE_PARSE_BYTES
from tdedge.edge.services import Services
from tdedge.journal.envelope import Envelope
from tdedge.loader.schema import TIME, fold, unix_time, usable_name
from tdedge.names import NAME_RULE, RECORD_ID, is_valid_name, normalize

DOOR = "mobile"
PATHS = frozenset({"/android/v3/event", "/ios/v3/event"})
# The failure of an event past MAX_EVENTS: a name the SDKs do not delete events for.
DEFERRED = "TooManyEventsError"
# Keys the Keen client adds.
KEEN, OLD_UUID, SSUT = "keen", "#UUID", "#SSUT"
UUID = "uuid"


@dataclass(frozen=True, slots=True)
class Collections:
    items: list[tuple[str, list[Event]]]  # each key of the body as sent, its events
    # The depth limit events must be measured against; None when the body holds too
    # few brackets for any event to pass it (as ingest.Events).
    max_depth: int | None

    def count(self) -> int:
        return sum(len(events) for _, events in self.items)


@dataclass(slots=True)
class Outcome:
    """One request's events: what to journal, the answer, and what was not stored."""

    envelopes: list[Envelope] = field(default_factory=list)
    answer: list[tuple[str, list[bytes]]] = field(default_factory=list)  # key, results
    refusals: list[str] = field(default_factory=list)  # reasons of the events refused
    deferred: int = 0  # events past MAX_EVENTS, for the SDK to send again


_body_decoder = msgspec.json.Decoder(dict[str, list[msgspec.Raw]])
_encode = msgspec.json.Encoder().encode


def content_encoding(scope: Scope) -> str | None:
    """``deflate``, ``gzip`` or None (none); 415 for other encodings."""
    encoding = (scope.headers.get("content-encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding == "deflate":
        return "deflate"
    if encoding in ("gzip", "x-gzip"):
        return "gzip"
    raise HTTPError(415, "unsupported_encoding", "Content-Encoding must be deflate, gzip or none")


def check_media_type(content_type: str | None) -> None:
    if (content_type or "").partition(";")[0].strip().lower() != "application/json":
        raise HTTPError(415, "unsupported_media_type", "Content-Type must be application/json")


def split_collections(body: bytes, max_depth: int) -> Collections:
    """The collections of a ``{"db.table":[…],…}`` body; 400 for anything else.

    Events stay raw JSON text, as on the Data Ingestion API; events nested too deep for
    the decoder are cut out first (ingest.cut_deep), so the others are still stored.
    """
    try:
        found = _body_decoder.decode(body)
        items: list[tuple[str, list[Event]]] = [(k, list(v)) for k, v in found.items()]
    except RecursionError:
        items = _split_deep(body, max_depth)
    except msgspec.DecodeError as e:
        raise _invalid_body(e) from None
    collections = Collections(items, None)
    if not collections.count():
        raise HTTPError(400, "no_events", 'no events: send {"db.table":[event, …]}')
    deep = nesting.opening_brackets(body) > max_depth + EVENT_LEVEL - 1
    return Collections(items, max_depth if deep else None)


def _split_deep(body: bytes, max_depth: int) -> list[tuple[str, list[Event]]]:
    cut, originals = cut_deep(body, max_depth)
    try:
        found = _body_decoder.decode(cut)
    except RecursionError:
        raise nesting.too_deep(max_depth) from None
    except msgspec.DecodeError as e:
        raise _invalid_body(e) from None
    return [(k, restore_deep(v, originals, max_depth)) for k, v in found.items()]


def _invalid_body(e: msgspec.DecodeError) -> HTTPError:
    return HTTPError(400, "invalid_body", f'body must be {{"db.table":[event, …]}} in JSON: {e}')


def collection(name: str) -> tuple[str, str, bool]:
    """``(database, table, valid)`` of a ``db.table`` key; invalid names are kept, cut
    short."""
    database, _, table = name.partition(".")
    if is_valid_name(database) and is_valid_name(table):
        return normalize(database), normalize(table), True
    return database[:MAX_KEPT_NAME], table[:MAX_KEPT_NAME], False


def keen_time(keen: Any) -> int | None:
    """Unix seconds of a Keen ``{"timestamp": "…"}`` (ISO 8601 with an offset, as both
    SDKs write it; UTC without one), or None."""
    if not isinstance(keen, dict) or not isinstance(keen.get("timestamp"), str):
        return None
    try:
        moment = datetime.fromisoformat(keen["timestamp"])
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):
        return None
    return unix_time(int(seconds))


def from_keen(event: dict[str, Any], received_s: int) -> dict[str, Any] | Failure:
    """The event as SDKs since 1.0 send it (see the module docstring), or why not."""
    keen = event.get(KEEN)
    if keen is not None:
        seconds = keen_time(keen)
        if seconds is not None:
            if event.get(TIME) is None:
                event[TIME] = seconds
            if len(keen) == 1:
                del event[KEEN]
    if OLD_UUID in event and UUID not in event:
        event[UUID] = event.pop(OLD_UUID)
    ssut = event.get(SSUT)
    if ssut is True:
        del event[SSUT]
        event[TIME] = received_s
    elif isinstance(ssut, str):
        if not usable_name(fold(ssut)):
            return Failure(
                NAME_ERROR,
                f"#SSUT names {ssut[:64]!r}, which cannot be a column",
                "invalid_property_name",
            )
        del event[SSUT]
        event[ssut] = received_s
    return event


class MobileAPI:
    """One request: body → events → one result per event, journaled in one group commit."""

    def __init__(self, services: Services) -> None:
        self._s = services

    async def handle(self, scope: Scope, proto: Protocol_) -> Response:
        s = self._s
        received_ms = time.time_ns() // 1_000_000
        key = records_key(scope.headers)
        sent = b""  # the body as sent (compressed or not)
        encoding: str | None = None
        try:
            # As on the Data Ingestion API: the headers, the size, then the credentials,
            # before anything is inflated or parsed.
            check_media_type(scope.headers.get("content-type"))
            encoding = content_encoding(scope)
            sent = await read_raw_body(scope, proto, MAX_REQUEST_BYTES)
            refused = key_refusal(scope, key)
            if refused is not None:
                raise refused
            assert key is not None
            s.authorize(key, "")
            body = await self.inflate(sent, encoding)
            found = await self.split(body)
            for name, _ in found.items:
                database, _, valid = collection(name)
                if valid:
                    s.authorize(key, database)
        except HTTPError as e:
            if not e.body:
                e.body = _head(sent, encoding, s.keep_bytes(e.code))
            await s.keep_refused(DOOR, received_ms, "", "", key, e, scope)
            raise
        outcome = self.sort(found, s.key_hash(key), received_ms)
        await s.append_many(outcome.envelopes)
        for reason in outcome.refusals:
            s.refusals.inc(DOOR, reason, "row")
        for _ in range(outcome.deferred):
            # Not refused: the SDK keeps these and sends them again.
            s.refusals.inc(DOOR, "too_many_events", "client")
        return 200, list(JSON_HEADERS), answer_body(outcome.answer)

    def sort(self, found: Collections, key_hash: bytes, received_ms: int) -> Outcome:
        """Each event's envelope and result (see the module docstring)."""
        out = Outcome()
        ids = iter(uuids(min(found.count(), MAX_EVENTS), received_ms))
        settings = self._s.settings
        added = (RECORD_ID,)
        for name, events in found.items:
            database, table, valid = collection(name)
            results: list[bytes] = []
            out.answer.append((name, results))
            for raw in events:
                if len(out.envelopes) >= MAX_EVENTS:
                    out.deferred += 1
                    results.append(_DEFERRED)
                    continue
                checked: dict[str, Any] | Failure
                if valid:
                    checked = check_event(raw, found.max_depth)
                    if not isinstance(checked, Failure):
                        checked = from_keen(checked, received_ms // 1000)
                    checked = fits_table(checked, settings.max_table_columns, added)
                else:
                    checked = Failure(
                        COLLECTION_ERROR,
                        f"{name[:MAX_KEPT_NAME]}: db.table, {NAME_RULE}",
                        "invalid_name",
                    )
                if isinstance(checked, Failure):
                    results.append(receipt(checked))
                    out.refusals.append(checked.reason)
                    record = kept(raw, settings.refused_keep_bytes)
                    out.envelopes.append(
                        Envelope(
                            received_ms,
                            DOOR,
                            database,
                            table,
                            key_hash,
                            record,
                            reject=checked.reason,
                        )
                    )
                    continue
                results.append(SUCCESS)
                out.envelopes.append(
                    Envelope(
                        received_ms,
                        DOOR,
                        database,
                        table,
                        key_hash,
                        _encode(checked),
                        record_id=next(ids),
                        record_uuid=dedup_id(checked, settings.record_uuid_column),
                    )
                )
        return out

    async def split(self, body: bytes) -> Collections:
        depth = self._s.settings.max_json_depth
        if len(body) <= INLINE_PARSE_BYTES:
            return split_collections(body, depth)
        return await self._s.offload.run(split_collections, body, depth)

    async def inflate(self, sent: bytes, encoding: str | None) -> bytes:
        if encoding is None:
            return sent
        members = self._s.settings.gzip_max_members

        def inflated() -> bytes:
            if encoding == "gzip":
                return inflation.gunzip(sent, MAX_REQUEST_BYTES, members)
            return inflation.inflate(sent, MAX_REQUEST_BYTES)

        if len(sent) <= INLINE_GZIP_BYTES:
            return inflated()
        return await self._s.offload.run(inflated)


_DEFERRED = receipt(
    Failure(
        DEFERRED,
        f"more than {MAX_EVENTS} events in one request: this one was not stored; send it again",
        "too_many_events",
    )
)


def answer_body(answer: list[tuple[str, list[bytes]]]) -> bytes:
    """``{"db.table":[result, …], …}`` with the keys exactly as the request had them:
    the SDKs look their events up by them."""
    return b"{" + b",".join(_pairs(answer)) + b"}"


def _pairs(answer: list[tuple[str, list[bytes]]]) -> Iterator[bytes]:
    for name, results in answer:
        yield _encode(name) + b":[" + b",".join(results) + b"]"


def _head(sent: bytes, encoding: str | None, n: int) -> bytes:
    """What an import-error row keeps of a request refused before it was inflated."""
    if encoding == "gzip":
        return inflation.head(sent, n)
    if encoding == "deflate":
        wbits = inflation.ZLIB_WBITS if sent[:1] == b"\x78" else inflation.RAW_WBITS
        return inflation.head(sent, n, wbits)
    return sent
