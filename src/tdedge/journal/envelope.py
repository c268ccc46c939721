"""The Envelope: one accepted record plus what the loader needs to place it.

The edge never stores an API key: it stores the key's SHA-256 digest, which is all
the loader needs to look the key up, so the journal on disk holds no secrets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

# gc=False: these hold only ints, strings, bytes and lists of each other, never a cycle,
# so the collector need not track them. The loader decodes one Envelope per record;
# untracked, each costs about a third less to make.


class Envelope(msgspec.Struct, frozen=True, array_like=True, gc=False):
    received_ms: int  # arrival time at the edge, unix milliseconds
    door: str  # "legacy", "records", "pixel", "ingest", "mobile", "p13n"
    database: str
    table: str
    key_hash: bytes  # sha256(key) — see control.keys.hash_key
    record: bytes  # one JSON object, already validated at the edge
    # Reasons the edge already knows this record must go to import errors
    # (e.g. a key that failed a sync check). Empty for the normal path.
    reject: str = ""
    # Set by ``import_with_id`` on every envelope of one upload (api/bulk_import.py):
    # the chunk's unique_id, the envelope's place in the chunk from 0, and a token
    # drawn for this upload. The loader loads an account's (database, table,
    # unique_id) once (loader/imports.py); the token tells the parts of the upload it
    # kept from those of a repeat, as a large upload spans several journal groups.
    # Trailing defaults: entries written before these fields existed still decode
    # (their uploads, one group each, are told apart by the place).
    import_id: str = ""
    import_index: int = 0
    import_attempt: str = ""
    # Set by the SDK doors (edge/ingest.py, edge/mobile.py) on every record they accept:
    # tdedge's own id of the record, which the loader writes to the _tdedge_id column
    # (the record itself stays as the client sent it, td_uuid and all).
    record_id: str = ""
    # The client's own id of the event (its record_uuid), when it sends one: a resent
    # event carries the same, and the loader loads an account's (database, table,
    # record_uuid) once within Settings.record_uuid_window_s (loader/duplicates.py).
    record_uuid: str = ""
    # Why the edge refused the record (``reject``), as the client was told: the detail
    # of its import-error row.
    reject_detail: str = ""


class JournalGroup(msgspec.Struct, frozen=True, gc=False):
    """Envelopes appended together: one journal row (or message), so they share one seq."""

    shard: str  # which journal (file or stream) holds it
    seq: int  # strictly increasing within the shard, never reused
    envelopes: Sequence[Envelope]


class JournalEntry(msgspec.Struct, frozen=True, gc=False):
    """One envelope and its place in the journal."""

    shard: str
    seq: int
    envelope: Envelope


def entries(groups: Iterable[JournalGroup]) -> list[JournalEntry]:
    """Every envelope of ``groups``, in order, with its place."""
    return [JournalEntry(g.shard, g.seq, env) for g in groups for env in g.envelopes]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode(raw: bytes) -> Envelope:
    return _decoder.decode(raw)
