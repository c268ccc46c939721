"""The Envelope: one accepted record plus what the loader needs to place it.

The edge never stores an API key: it stores the key's SHA-256 digest, which is all
the loader needs to look the key up, so the journal on disk holds no secrets.
"""

from __future__ import annotations

import msgspec


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    received_ms: int  # arrival time at the edge, unix milliseconds
    door: str  # "legacy", "records", "pixel", "ingest", "p13n"
    database: str
    table: str
    key_hash: bytes  # sha256(key) — see control.keys.hash_key
    record: bytes  # one JSON object, already validated at the edge
    # Reasons the edge already knows this record must go to import errors
    # (e.g. a key that failed a sync check). Empty for the normal path.
    reject: str = ""


class JournalEntry(msgspec.Struct, frozen=True):
    shard: str  # which journal (file or stream) holds it
    seq: int  # strictly increasing within the shard, never reused
    envelope: Envelope


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode(raw: bytes) -> Envelope:
    return _decoder.decode(raw)
