"""``PUT /v3/table/import[_with_id]/{db}/{table}[/{unique_id}]/msgpack.gz``.

What td-logger and fluent-plugin-td send: a gzip of msgpack maps back to back, one
per record, each with a ``time``. The records take the same path as every other door's:
one Envelope each (door ``import``, the key's hash), journaled all together or not at
all, then loaded by the loader. The answer comes once they are durable:
``{"database","table","unique_id","md5_hex","elapsed_time"}``, where md5_hex is the MD5
of the body as uploaded.

A small body can inflate to gigabytes, so nothing here holds an upload whole:

1. the body is inflated once without being kept, in bounded steps, only to measure it:
   past ``import_max_inflated_bytes`` it is a 413 after a fraction of a second of
   zlib, before anything is decoded or written;
2. then inflated again and split into records as it comes (api/msgpack_records.py),
   each re-encoded as the JSON object the loader reads, and journaled in parts of
   about ``PART_BYTES``. An upload that fits in one part joins the journal's group commit
   like any request; a larger one is staged part by part and published whole
   (journal/sqlite.py), so neither a refused upload nor a dead worker leaves half of
   one behind.

A record over ``import_max_record_bytes``, as msgpack or as JSON, becomes an import
error (``record_too_large``) and the rest of its upload loads; one too large is never
decoded (api/msgpack_records.py). A refused upload leaves one import-error row with
its reason and a summary (never the body).

With a unique_id the chunk loads exactly once per account: the loader drops a repeated
upload (loader/imports.py). Once the loader has loaded an id it tells the ledger
(control/imports.py), and a retry that finds it there is answered at once, without
inflating or journaling the body again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import msgspec

from tdedge.api.callers import Caller
from tdedge.api.context import Api, valid_name
from tdedge.api.msgpack_records import RECORD_TOO_LARGE, Record, records
from tdedge.api.wire import ApiError, ok
from tdedge.control import access
from tdedge.control.imports import ImportLedger
from tdedge.edge import inflation
from tdedge.edge.http import BodyTooLarge, HTTPError, Response
from tdedge.errors import JournalUnavailable
from tdedge.journal.base import Journal
from tdedge.journal.envelope import Envelope

DOOR = "import"
FORMATS = ("msgpack.gz", "msgpack")

# Inflated bytes produced at once, as edge/inflation.py does.
OUT_STEP = inflation.STEP_BYTES
# gzip members in one body: a handful when files are concatenated; each costs a
# decompressor, so thousands of empty ones are refused rather than walked.
MAX_MEMBERS = 1024
# A journal part: the most of an upload's records the edge holds at once, and what the
# loader reads at a time. Small enough for both; large enough that a fluent-plugin-td
# chunk (at most 32 MiB and 8,096 records) takes a few parts.
PART_BYTES = 4 * 1024 * 1024
PART_RECORDS = 10_000

_json = msgspec.json.Encoder()


def inflated(body: bytes, limit: int) -> Iterator[bytes]:
    """The gzip ``body`` (one member or several) inflated in bounded steps
    (edge/inflation.py), refused as TD's API refuses: 413 as soon as the total passes
    ``limit``, 400 when it is not gzip. An empty body holds no records."""
    try:
        yield from inflation.chunks(body, limit, MAX_MEMBERS)
    except BodyTooLarge:
        raise ApiError(413, "body_too_large", f"the records inflate past {limit} bytes") from None
    except HTTPError as e:
        raise ApiError(e.status, e.code, e.message) from None


def measure(body: bytes, limit: int) -> int:
    """The inflated size of ``body``, without keeping it (see ``inflated``)."""
    return sum(len(chunk) for chunk in inflated(body, limit))


def steps(data: bytes) -> Iterator[bytes]:
    """An uncompressed body in the same steps as ``inflated``."""
    for at in range(0, len(data), OUT_STEP):
        yield data[at : at + OUT_STEP]


class Encoded(Protocol):
    @property
    def json(self) -> bytes: ...


R = TypeVar("R", bound=Encoded)


def parts(found: Iterable[R], envelope: Callable[[R, int], Envelope]) -> Iterator[list[Envelope]]:
    """The envelopes of ``found`` in journal parts of about PART_BYTES or PART_RECORDS."""
    part: list[Envelope] = []
    size = 0
    for i, record in enumerate(found):
        part.append(envelope(record, i))
        size += len(record.json)
        if size >= PART_BYTES or len(part) >= PART_RECORDS:
            yield part
            part, size = [], 0
    if part:
        yield part


class Abandoned(Exception):
    """The request was cancelled (the worker stopping) before the upload was published."""


def journal_parts(
    journal: Journal, found: Iterator[list[Envelope]], abandoned: threading.Event
) -> list[Envelope] | int:
    """Journal ``found``: one part is returned for the event loop's group commit; more
    are staged and published whole here (blocking), and their record count returned."""
    first = next(found, [])
    second = next(found, None)
    if second is None:
        return first
    staged = journal.stage()
    try:
        staged.add(first)
        del first
        staged.add(second)
        del second
        for part in found:
            if abandoned.is_set():
                raise Abandoned
            staged.add(part)
        if abandoned.is_set():
            raise Abandoned
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    return staged.records


async def bulk_import(
    api: Api, ledger: ImportLedger, caller: Caller, args: tuple[str, ...], body: bytes
) -> Response:
    started = time.perf_counter()
    received_ms = time.time_ns() // 1_000_000
    if len(args) == 4:
        database_name, table_name, unique_id, fmt = args
    else:
        (database_name, table_name, fmt), unique_id = args, None
    if fmt not in FORMATS:
        raise ApiError(400, "unsupported_format", f"import format {fmt!r}: use msgpack.gz")
    database = await asyncio.to_thread(_database, api, caller, database_name)
    table = valid_name(table_name, "table")
    md5_hex = await asyncio.to_thread(_md5, body)
    answer: dict[str, Any] = {"database": database, "table": table, "md5_hex": md5_hex}
    if unique_id is not None:
        answer["unique_id"] = unique_id
        done = await asyncio.to_thread(ledger.find, caller.account_id, database, table, unique_id)
        if done is not None:
            answer["elapsed_time"] = time.perf_counter() - started
            return ok(answer)
    try:
        await _journal(api, caller, database, table, unique_id, fmt, body, received_ms)
    except ApiError as e:
        await _keep_refused(api, caller, database, table, unique_id, body, received_ms, e)
        raise
    answer["elapsed_time"] = time.perf_counter() - started
    return ok(answer)


async def _journal(
    api: Api,
    caller: Caller,
    database: str,
    table: str,
    unique_id: str | None,
    fmt: str,
    body: bytes,
    received_ms: int,
) -> None:
    settings = api.settings
    limit = settings.import_max_inflated_bytes
    gzipped = fmt == "msgpack.gz"
    if gzipped:
        await asyncio.to_thread(measure, body, limit)
    # With a unique_id each envelope carries it, its place in the chunk and this
    # upload's token: the loader loads the chunk once whatever happens here
    # (loader/imports.py).
    import_id = unique_id or ""
    attempt = secrets.token_hex(8) if unique_id is not None else ""

    def envelope(record: Record, index: int) -> Envelope:
        return Envelope(
            received_ms,
            DOOR,
            database,
            table,
            caller.key_hash,
            record.json,
            reject=RECORD_TOO_LARGE if record.too_large else "",
            import_id=import_id,
            import_index=index,
            import_attempt=attempt,
        )

    def journal() -> list[Envelope] | int:
        chunks = inflated(body, limit) if gzipped else steps(body)
        found = parts(
            records(chunks, settings.import_max_record_bytes, settings.max_json_depth), envelope
        )
        return journal_parts(api.services.journal, found, abandoned)

    abandoned = threading.Event()
    try:
        done = await asyncio.to_thread(journal)
    except asyncio.CancelledError:
        abandoned.set()  # the thread goes on to its end, then discards what it wrote
        raise
    except JournalUnavailable as e:
        raise api.services.unavailable(e) from e
    if isinstance(done, list) and done:
        await api.services.append_many(done)


async def _keep_refused(
    api: Api,
    caller: Caller,
    database: str,
    table: str,
    unique_id: str | None,
    body: bytes,
    received_ms: int,
    e: ApiError,
) -> None:
    """One import-error row for a refused upload: its reason and what it was, not its
    bytes (binary, and possibly huge)."""
    summary = {"unique_id": unique_id, "body_bytes": len(body), "message": e.message}
    env = Envelope(
        received_ms, DOOR, database, table, caller.key_hash, _json.encode(summary), reject=e.code
    )
    # When the journal is full the client still gets its own error; the 503 is counted.
    with contextlib.suppress(HTTPError):
        await api.services.append(env)


def _md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _database(api: Api, caller: Caller, name: str) -> str:
    """The target database; a master key creates a missing one, as writing does elsewhere."""
    return api.owned_database(caller, name, access.Action.WRITE)
