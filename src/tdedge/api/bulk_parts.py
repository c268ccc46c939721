"""The records of a Bulk Import part, and which of them load.

A part is what td-client uploads: msgpack maps back to back, gzipped (td-client turns
csv, tsv, json and msgpack files into that before sending; the API never sees another
format). Plain msgpack is taken too, told apart by gzip's first bytes (no msgpack map
starts with them). It is read with the table import's machinery: inflated in bounded
steps (edge/inflation.py), split into records in bounded memory
(api/msgpack_records.py), each re-encoded as the JSON object the loader reads.

A record loads unless it is one of TD's error records, which are kept aside, counted
and listed (``error_records``), and once committed go to the import errors with their
reason:

``time_missing``
    no ``time`` (a key that folds to ``time``, as the loader reads it) or only nulls
``time_invalid``
    a ``time`` that is not unix seconds between 1970 and 2100: an integer, or a float
    or a string holding one (the loader's own rule, loader/schema.py)
``record_too_large``
    over ``import_max_record_bytes`` as msgpack or as JSON

Every other value loads under the loader's type rule: a value that does not fit its
column is kept in ``td_type_conflicts``, never refused.

Pure functions but for the work: callers run them off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from tdedge.api.bulk_import import inflated, steps
from tdedge.api.msgpack_records import RECORD_TOO_LARGE, Record, records
from tdedge.config import Settings
from tdedge.loader.schema import TIME, fold, unix_time

TIME_MISSING = "time_missing"
TIME_INVALID = "time_invalid"
REASONS = (TIME_MISSING, TIME_INVALID, RECORD_TOO_LARGE)

_GZIP = b"\x1f\x8b"
_decode = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass(frozen=True, slots=True)
class Checked:
    json: bytes  # the record as the loader reads it (when too large, what is kept of it)
    reason: str  # why it does not load; "" when it does


@dataclass(frozen=True, slots=True)
class Counts:
    records: int
    error_records: int


def part_records(body: bytes, settings: Settings) -> Iterator[Record]:
    """The records of one part; ApiError (400, 413) for a body that is not gzipped
    msgpack maps, or inflates past ``import_max_inflated_bytes``."""
    if body[:2] == _GZIP:
        chunks: Iterable[bytes] = inflated(body, settings.import_max_inflated_bytes)
    else:
        chunks = steps(body)
    return records(chunks, settings.import_max_record_bytes, settings.max_json_depth)


def reason(record: Record) -> str:
    """Why ``record`` is an error record, or "" when it loads."""
    if record.too_large:
        return RECORD_TOO_LARGE
    for key, value in _decode(record.json).items():
        # As the loader reads a record: the first non-null value of a key folding
        # to "time" is its time.
        if value is not None and fold(key) == TIME:
            return "" if unix_time(value) is not None else TIME_INVALID
    return TIME_MISSING


def checked(found: Iterable[Record]) -> Iterator[Checked]:
    for record in found:
        yield Checked(record.json, reason(record))


def count(body: bytes, settings: Settings) -> Counts:
    """How many records the part holds, and how many of them are error records; the
    part is read whole, so what is wrong with it is refused here, on upload."""
    n = errors = 0
    for record in part_records(body, settings):
        n += 1
        errors += reason(record) != ""
    return Counts(n, errors)


def error_records(bodies: Iterable[bytes], settings: Settings, limit: int) -> Iterator[Any]:
    """The session's error records as uploaded, in part order, until ``limit`` bytes of
    their JSON have been listed. A record too large is never held whole: it is listed
    as ``{"record_too_large": <the start of its JSON, as text>}``."""
    listed = 0
    for body in bodies:
        for item in checked(part_records(body, settings)):
            if not item.reason:
                continue
            listed += len(item.json)
            if listed > limit:
                return
            if item.reason == RECORD_TOO_LARGE:
                yield {RECORD_TOO_LARGE: item.json.decode("utf-8", "replace")}
            else:
                yield _decode(item.json)
