"""``PUT /v3/table/import[_with_id]/{db}/{table}[/{unique_id}]/msgpack.gz``.

What td-logger and fluent-plugin-td send: a gzip of msgpack maps back to back, one
per record, each with a ``time``. The records take the same path as every other door's:
one Envelope each (door ``import``, the key's hash), appended to the journal together
(one group commit: all or none), then loaded by the loader. The answer comes once they
are durable: ``{"database","table","unique_id","md5_hex","elapsed_time"}``, where
md5_hex is the MD5 of the body as uploaded.

With a unique_id the chunk loads exactly once: the loader drops a repeated upload
(loader/imports.py). The ledger (control/imports.py) only spares a known retry the
inflating and journaling: it is answered at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from typing import Any

import msgpack
import msgspec

from tdedge.api.callers import Caller
from tdedge.api.context import Api, valid_name
from tdedge.api.wire import ApiError, not_found, ok
from tdedge.control.imports import Imported, ImportLedger
from tdedge.edge.http import Response
from tdedge.edge.nesting import deeper_than, too_deep
from tdedge.journal.envelope import Envelope
from tdedge.names import is_reserved

DOOR = "import"
FORMATS = ("msgpack.gz", "msgpack")

_json = msgspec.json.Encoder(enc_hook=lambda v: _jsonable(v))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, msgpack.ExtType):
        return None
    if isinstance(value, msgpack.Timestamp):
        return value.seconds
    raise TypeError(f"cannot store a {type(value).__name__}")


def inflate(body: bytes, limit: int) -> bytes:
    """Gunzip ``body``, refusing (413) past ``limit`` bytes: a small bomb stays small."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise ApiError(400, "invalid_gzip", f"the body is not gzip data: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ApiError(413, "body_too_large", f"the records inflate past {limit} bytes")
    return out


def records(data: bytes, max_depth: int) -> list[bytes]:
    """Each msgpack map as the JSON object the loader reads; 400 ``too_deep`` for a
    record nested deeper than ``max_depth`` (as the doors refuse such JSON)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    out: list[bytes] = []
    try:
        for item in unpacker:
            if not isinstance(item, dict):
                raise ApiError(400, "not_an_object", "every msgpack record must be a map")
            record = _json.encode({str(k): v for k, v in item.items()})
            if deeper_than(record, max_depth):
                raise too_deep(max_depth)
            out.append(record)
    except RecursionError:
        raise too_deep(max_depth) from None
    except (msgpack.UnpackException, ValueError) as e:
        raise ApiError(400, "invalid_msgpack", f"the body is not msgpack records: {e}") from None
    except TypeError as e:
        raise ApiError(400, "invalid_record", str(e)) from None
    return out


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
    md5_hex = hashlib.md5(body, usedforsecurity=False).hexdigest()
    answer: dict[str, Any] = {"database": database, "table": table, "md5_hex": md5_hex}
    if unique_id is not None:
        answer["unique_id"] = unique_id
        done = await asyncio.to_thread(ledger.find, caller.account_id, database, table, unique_id)
        if done is not None:
            answer["md5_hex"] = done.md5_hex
            answer["elapsed_time"] = time.perf_counter() - started
            return ok(answer)
    limit = api.settings.import_max_inflated_bytes
    raw = await asyncio.to_thread(inflate, body, limit) if fmt == "msgpack.gz" else body
    found = await asyncio.to_thread(records, raw, api.settings.max_json_depth)
    if found:
        # With a unique_id each envelope carries it and its place in the chunk: the
        # loader loads the chunk once whatever happens here (loader/imports.py).
        import_id = unique_id or ""
        envs = [
            Envelope(
                received_ms,
                DOOR,
                database,
                table,
                caller.key_hash,
                r,
                import_id=import_id,
                import_index=i,
            )
            for i, r in enumerate(found)
        ]
        await api.services.append_many(envs)
    if unique_id is not None:
        imported = Imported(md5_hex, len(found))
        await asyncio.to_thread(
            ledger.record, caller.account_id, database, table, unique_id, imported, time.time()
        )
    answer["elapsed_time"] = time.perf_counter() - started
    return ok(answer)


def _database(api: Api, caller: Caller, name: str) -> str:
    """The target database; a master key creates a missing one, as writing does elsewhere."""
    database = valid_name(name, "database")
    if is_reserved(database):
        raise ApiError(400, "reserved_database", f"database {database} is tdedge's own")
    owner = api.auth.owner(database)
    if owner is None and caller.master and api.settings.auto_create_database_for_master:
        owner = api.auth.created(database, caller.account_id)
    if owner is None or owner != caller.account_id:
        raise not_found(f"database '{database}'")
    return database
