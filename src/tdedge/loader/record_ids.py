"""The record_uuids the loader has loaded, with the journal entry each came from.

The mobile SDKs resend an event when they get no answer, and with
``enableAutoAppendRecordUUID()`` every copy carries the same ``record_uuid``. The
loader looks each such event up here by (account, database, table, record_uuid) and
loads it only if no other journal entry loaded that id within
``Settings.record_uuid_window_s`` (loader/duplicates.py).

Not a table in the lake, as bulk-import ids are (lake/system.py): those are one row per
upload, these one per event, and the lake has no index, so every batch would scan all
the ids of the window. Here a lookup is a primary-key probe in an SQLite file of the
loader's own, whatever the window holds. The file is not the lake, so an id cannot be
written in the lake's transaction; instead each id names the journal entry that owns
it (shard, seq, place in the group), written before the lake commit:

- an entry whose id another entry owns is a duplicate, and is dropped;
- an entry that owns its id loads: the first time, and again if the lake commit after
  the claim failed and the batch is read once more;
- the claim is durable before the commit, so a commit that landed always has its ids
  here, whatever is killed when.

A row is a 16-byte hash of the key (BLAKE2b: two ids of a window collide with a
chance far below one in 2**64) and the entry's place: about 70 bytes with its index.
Ids are random, so each claim writes a page of its own to the WAL: a claim costs
~10 µs with few ids here, ~35 µs with a million, a lookup 3 to 7 µs — for SDK events
with a record_uuid only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tdedge.control.store import create_tables, sqlite_engine

metadata = sa.MetaData()

record_ids = sa.Table(
    "record_ids",
    metadata,
    sa.Column("key", sa.LargeBinary(16), primary_key=True),
    sa.Column("shard", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("place", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
# What ``forget`` deletes by.
_CREATED_AT = "CREATE INDEX IF NOT EXISTS record_ids_created_at ON record_ids (created_at)"
# Keys per lookup statement (SQLite binds at most 32,766 parameters; shorter
# statements measured no slower).
LOOKUP_CHUNK = 500
_CLAIM = (
    "INSERT OR IGNORE INTO record_ids (key, shard, seq, place, created_at) VALUES (?, ?, ?, ?, ?)"
)
# Rows one ``forget`` transaction deletes, so that it never holds the file long.
FORGET_CHUNK = 10_000

# SQLite's page cache for this file, in KiB. Ids are random, so each lookup or claim
# touches its own page of the key's B-tree: with SQLite's default 2 MiB, a million ids
# took ~30 µs per lookup here, with this ~7 µs.
CACHE_KIB = 32 * 1024

Place = tuple[str, int, int]  # (journal shard, seq, index in the group)


def _cache_pragma(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    cur.close()


def record_key(account_id: int, database: str, table: str, record_uuid: str) -> bytes:
    """The 16-byte key of one id (names cannot hold NUL, so the fields stay apart)."""
    text = f"{account_id}\0{database}\0{table}\0{record_uuid}"
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class RecordIds:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        create_tables(metadata, engine, then=[_CREATED_AT])

    @classmethod
    def open(cls, path: Path) -> RecordIds:
        engine = sqlite_engine(path)
        event.listen(engine, "connect", _cache_pragma)
        return cls(engine)

    def close(self) -> None:
        self._engine.dispose()

    # Lookups and claims are the loader's per-event work for SDK events with a
    # record_uuid: plain statements on the driver cost a third of what SQLAlchemy's
    # expanding IN and executemany of dicts did here (3 against 8 µs per lookup).
    def owners(self, keys: Collection[bytes]) -> dict[bytes, Place]:
        """The entry that owns each of ``keys`` recorded here."""
        found: dict[bytes, Place] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(keys, LOOKUP_CHUNK):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key, shard, seq, place FROM record_ids WHERE key IN ({marks})"
                for key, shard, seq, place in conn.exec_driver_sql(sql, tuple(chunk)):
                    found[bytes(key)] = (str(shard), int(seq), int(place))
        return found

    def claim(self, claims: Mapping[bytes, Place], now: float) -> None:
        """Record new ids and their entries, durably, in one transaction; an id
        recorded already keeps its owner."""
        if not claims:
            return
        created = int(now)
        rows = [(key, shard, seq, place, created) for key, (shard, seq, place) in claims.items()]
        with self._engine.begin() as conn:
            conn.exec_driver_sql(_CLAIM, rows)

    def forget(self, before: float) -> int:
        """Delete the ids recorded before ``before``, a chunk per transaction: a resend
        of one loads again. How many went."""
        t = record_ids.c
        oldest = sa.select(t.key).where(t.created_at < int(before)).limit(FORGET_CHUNK)
        gone = 0
        while True:
            with self._engine.begin() as conn:
                n = int(conn.execute(sa.delete(record_ids).where(t.key.in_(oldest))).rowcount)
            gone += n
            if n < FORGET_CHUNK:
                return gone

    def count(self) -> int:
        with self._engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(record_ids)
            return int(conn.execute(query).scalar_one())


def _chunks(items: Collection[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
