"""Bulk uploads inside: bounded inflating and decoding, journal parts, and the loader's
unique_ids per account, upload and batch size."""

from __future__ import annotations

import asyncio
import gzip
import random
import threading
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest

from tdedge.api import bulk_import, msgpack_records
from tdedge.api.bulk_import import inflated, journal_parts, measure, parts
from tdedge.api.msgpack_records import Record, Skipper, records
from tdedge.api.wire import ApiError
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.imports import ImportLedger
from tdedge.control.keys import hash_key, key_id
from tdedge.control.store import ControlStore, sqlite_engine
from tdedge.journal.envelope import Envelope
from tdedge.journal.sqlite import SQLiteJournal, SQLiteJournalReader
from tdedge.lake import system
from tdedge.lake.connection import open_connection
from tdedge.lake.lake import Lake
from tdedge.loader import imports
from tdedge.loader.runner import Loader

NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)
KIB = 1024


def packed(*maps: Any) -> bytes:
    return b"".join(msgpack.packb(m) for m in maps)


def refusal(e: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return e.value.status, e.value.code


# Inflating.


def test_inflating_reads_every_member_and_refuses_past_the_limit() -> None:
    body = gzip.compress(b"a" * 300_000) + gzip.compress(b"b" * 10)
    assert b"".join(inflated(body, 300_010)) == b"a" * 300_000 + b"b" * 10
    assert max(len(c) for c in inflated(body, 10**6)) <= bulk_import.OUT_STEP
    with pytest.raises(ApiError) as e:
        measure(body, 300_009)
    assert refusal(e) == (413, "body_too_large")


def test_inflating_refuses_what_is_not_whole_gzip() -> None:
    body = gzip.compress(b"x" * 1000)
    for bad in (b"not gzip", body[:-5], body + b"junk"):
        with pytest.raises(ApiError) as e:
            measure(bad, 10**6)
        assert refusal(e) == (400, "invalid_gzip")
    assert measure(b"", 10) == 0  # an empty body: no records, as before
    empties = gzip.compress(b"") * (bulk_import.MAX_MEMBERS + 1)
    assert measure(gzip.compress(b"") * bulk_import.MAX_MEMBERS, 10) == 0
    with pytest.raises(ApiError, match="gzip members") as e:
        measure(empties, 10)
    assert refusal(e) == (400, "invalid_gzip")


# Decoding.


def steps(data: bytes, size: int = 7) -> list[bytes]:
    """Tiny steps: records cross every boundary."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_records_stream_across_steps_as_json() -> None:
    data = packed({"time": 1, "s": "é", "t": msgpack.Timestamp(5)}, {1: None})
    got = list(records(steps(data), 1000, 100))
    assert got == [
        Record('{"time":1,"s":"é","t":5}'.encode()),
        Record(b'{"1":null}'),
    ]


def test_a_record_over_the_cap_is_kept_short_and_marked() -> None:
    data = packed({"i": 0}, {"i": 1, "pad": "\x01" * 200}, {"i": 2})  # 1,213 bytes of JSON
    got = list(records(steps(data, 100), 1000, 100))
    assert [r.too_large for r in got] == [False, True, False]
    assert got[1].json.startswith(b'{"i":1,"pad":"\\u0001\\u0001')
    assert got[2] == Record(b'{"i":2}')


def test_a_record_too_large_to_decode_is_walked_past_alone() -> None:
    """A string, a container, and many small values, each past what a 100 KiB record
    may take: skipped without being decoded, and the next record is read."""
    cap = 100 * KIB
    for big in (
        {"s": "x" * (cap + 1)},
        {"a": [0] * (cap // 2 + 1)},
        {"a": [{"k": 1.5}] * (cap // 8), "m": {"x": [None, True, b"b", -1]}},
        {"n": 2**63, "e": msgpack.ExtType(5, b"e" * (cap + 1)), "t": msgpack.Timestamp(1, 2)},
    ):
        data = packed({"i": 0}, big, {"i": 2})
        for size in (1, 7, 100_000):
            got = list(records(steps(data, size), cap, 100))
            assert [r.too_large for r in got] == [False, True, False]
            assert (got[0], got[2]) == (Record(b'{"i":0}'), Record(b'{"i":2}'))
        # Fed in small steps it is never decoded: the error keeps its size alone. (One
        # that ends within the feed that passes the cap is decoded, then refused.)
        summary = b'{"msgpack_bytes":%d}' % len(msgpack.packb(big))
        assert list(records(steps(data, 7), cap, 100))[1].json == summary


def test_records_over_the_cap_as_msgpack_or_as_json_are_refused_alone() -> None:
    cap = 1000
    escaped = {"s": "\x01" * 300}  # 300 bytes of msgpack, 1,800 of JSON
    floats = {"f": [0.0] * 110}  # 1,000 bytes of msgpack, 441 of JSON
    got = list(records([packed(escaped, floats, {"f": [0.0] * 111})], cap, 100))
    assert [r.too_large for r in got] == [True, False, True]


def test_walking_oversized_records_has_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(msgpack_records, "MAX_SKIPPED_VALUES", 10_000)
    many = {"a": [1.5] * 4_000}
    assert len(list(records([packed(many, many)], 1000, 100))) == 2
    with pytest.raises(ApiError, match="refused whole") as e:
        list(records(steps(packed(many, many, many), 64 * KIB), 1000, 100))
    assert refusal(e) == (413, "record_too_large")
    # One-byte values are walked in runs, whatever their number.
    nils = {"a": [None] * 100_000}
    assert len(list(records(steps(packed(nils, {"i": 1}), 64 * KIB), 1000, 100))) == 2


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value, with every header width and nesting."""
    kind = rng.randrange(12 if depth < 4 else 9)
    n = rng.choice([0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536])
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 127, 128, -32, -33, 255, 256, -129, 2**16, -(2**31), 2**63])
    if kind == 2:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if kind == 3:
        return "é" * (n // 2)
    if kind == 4:
        return b"\0" * n
    if kind == 5:
        return msgpack.ExtType(rng.randrange(100), b"e" * rng.choice([1, 2, 4, 8, 16, n]))
    if kind == 6:
        return msgpack.Timestamp(rng.randrange(2**34), rng.choice([0, 5]))
    if kind in (7, 8):
        return rng.choice([[None] * n, [0.5] * min(n, 300)])
    if kind in (9, 10):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(20))]
    return {str(i): random_value(rng, depth + 1) for i in range(rng.randrange(20))}


def test_the_walker_finds_the_end_of_any_value_however_it_is_cut() -> None:
    rng = random.Random(13)
    for _ in range(300):
        value = msgpack.packb(random_value(rng))
        data = memoryview(value + b"\xa1z")  # what follows it
        skipper, at, end = Skipper(), 0, None
        while end is None:
            piece = data[at : at + rng.choice([1, 2, 3, 7, 1000, 70_000])]
            found = skipper.feed(piece)
            end = None if found is None else at + found
            at += len(piece)
        assert end == skipper.size == len(value)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (packed({"i": 0}, [1, 2]), "not_an_object"),
        (packed({"i": 0})[:-1], "invalid_msgpack"),
        (b"\xc1", "invalid_msgpack"),
        (packed({"i": 0}, {"s": "x" * 2000})[:-1], "invalid_msgpack"),  # while skipping
        (
            packed({"i": 0}) + b"\x82\xa1s\xda\x07\xd0" + b"x" * 2000 + b"\xa1t\xc1",
            "invalid_msgpack",
        ),
    ],
)
def test_malformed_uploads_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(ApiError) as e:
        list(records([data], 1000, 100))
    assert refusal(e) == (400, code)


# Journaling.


def envelope(record: Record, i: int) -> Envelope:
    return Envelope(NOW_MS, "import", "db", "t", b"h" * 32, record.json, import_index=i)


def test_parts_are_bounded_by_bytes_and_records() -> None:
    many = [Record(b"{}")] * (bulk_import.PART_RECORDS + 1)
    assert [len(p) for p in parts(many, envelope)] == [bulk_import.PART_RECORDS, 1]
    big = [Record(b"x" * (bulk_import.PART_BYTES // 2))] * 5
    assert [len(p) for p in parts(big, envelope)] == [2, 2, 1]


def test_one_part_goes_to_the_group_commit_more_are_staged_whole(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    journal = SQLiteJournal(s)
    reader = SQLiteJournalReader(s.journal_dir)
    one = [envelope(Record(b"{}"), 0)]
    assert journal_parts(journal, iter([one]), threading.Event()) == one
    three = iter([one, one, one])
    assert journal_parts(journal, three, threading.Event()) == 3
    assert [len(g.envelopes) for g in reader.read({}, 100)] == [1, 1, 1]

    # Abandoned or refused half-way: nothing is published.
    abandoned = threading.Event()
    abandoned.set()
    with pytest.raises(bulk_import.Abandoned):
        journal_parts(journal, iter([one, one, one]), abandoned)

    def failing() -> Any:
        yield one
        yield one
        raise ApiError(413, "record_too_large", "too large")

    with pytest.raises(ApiError):
        journal_parts(journal, failing(), threading.Event())
    assert len(reader.read({}, 100)) == 3
    journal.close()
    reader.close()


# Loading.


class World:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.settings = Settings(data_dir=str(tmp_path / "data"), **overrides)
        self.store = ControlStore.open(self.settings.control_db)
        self.master = self.store.create_key(1, "master")
        self.revoked = self.store.create_key(1, "write")
        self.other = self.store.create_key(2, "master")
        self.store.create_database("db", 1)
        self.store.create_database("elsewhere", 2)
        self.lake = Lake.open(self.settings)
        self.journal = SQLiteJournal(self.settings)
        self.reader = SQLiteJournalReader(self.settings.journal_dir)
        self.ledger = ImportLedger(sqlite_engine(self.settings.control_db))

    def upload(
        self, unique_id: str, n: int, *, key: str = "", db: str = "db", attempt: str = "a"
    ) -> list[Envelope]:
        return [
            Envelope(
                NOW_MS,
                "import",
                db,
                "t",
                hash_key(key or self.master),
                msgspec.json.encode({"i": i}),
                import_id=unique_id,
                import_index=i,
                import_attempt=attempt,
            )
            for i in range(n)
        ]

    def append(self, envs: list[Envelope]) -> None:
        asyncio.run(self.journal.append_many(envs))

    def stage(self, *part_list: list[Envelope]) -> None:
        staged = self.journal.stage()
        for part in part_list:
            staged.add(part)
        staged.publish()

    def loader(self, **overrides: Any) -> Loader:
        directory = Directory(self.store, ttl_s=60)
        settings = msgspec.structs.replace(self.settings, **overrides)
        return Loader(settings, self.reader, directory, self.lake, ledger=self.ledger)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.lake.query(sql).rows

    def errors(self) -> list[tuple[Any, ...]]:
        return self.rows(
            f"SELECT reason, account_id, table_name FROM {system.IMPORT_ERRORS} "
            "ORDER BY journal_seq, reason"
        )

    def close(self) -> None:
        self.journal.close()
        self.reader.close()
        self.lake.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    w.close()


def test_a_large_upload_loads_part_by_part_and_its_repeat_is_dropped(world: World) -> None:
    first = world.upload("u", 6, attempt="first")
    repeat = world.upload("u", 6, attempt="repeat")
    world.stage(first[:2], first[2:4], first[4:])
    world.stage(repeat[:3], repeat[3:])
    loader = world.loader(loader_batch_max_records=4)
    # Two parts a batch: the upload's later parts come in later batches and still load.
    reports = [loader.step(NOW + 10) for _ in range(4)]
    assert [r.rows for r in reports] == [4, 2, 0, 0]
    assert [r.duplicates for r in reports] == [0, 3, 3, 0]
    assert world.rows("SELECT count(*), count(DISTINCT i) FROM db.t") == [(6, 6)]
    assert world.rows(
        f"SELECT account_id, unique_id, attempt, records FROM {system.BULK_IMPORTS} "
        "ORDER BY journal_seq"
    ) == [(1, "u", "first", 2), (1, "u", "first", 2), (1, "u", "first", 2)]
    # One row per dropped group of the repeat, none for the parts loaded.
    assert world.errors() == [(imports.DUPLICATE_UPLOAD, 1, "t")] * 2
    assert world.ledger.find(1, "db", "t", "u") is not None


def test_a_chunk_refused_whole_is_not_recorded_and_accounts_never_collide(
    world: World,
) -> None:
    world.store.revoke_key(key_id(hash_key(world.revoked)))
    world.append(world.upload("u", 2, key=world.revoked, attempt="bad"))
    world.append(world.upload("u", 2, attempt="good"))
    # Account 2 writing account 1's database is refused whole; in its own, it loads.
    world.append(world.upload("u", 2, key=world.other, attempt="foreign"))
    world.append(world.upload("u", 1, key=world.other, db="elsewhere", attempt="own"))
    report = world.loader().step(NOW + 10)
    assert (report.rows, report.rejected, report.duplicates) == (3, 4, 0)
    assert world.rows("SELECT count(*) FROM db.t") == [(2,)]
    assert world.rows("SELECT count(*) FROM elsewhere.t") == [(1,)]
    reasons = sorted({r[:2] for r in world.errors()})
    assert reasons == [("foreign_key", 2), ("revoked_key", 1)]
    assert world.rows(
        f"SELECT account_id, database_name, attempt FROM {system.BULK_IMPORTS} ORDER BY 1"
    ) == [(1, "db", "good"), (2, "elsewhere", "own")]
    assert world.ledger.find(1, "db", "t", "u") is not None
    assert world.ledger.find(2, "db", "t", "u") is None


def test_ids_from_before_accounts_still_drop_their_repeats(tmp_path: Path) -> None:
    """A lake whose bulk_imports predates account_id and attempt gets them, NULL in the
    old rows, which still count as loaded for the key's database, table and id."""
    w = World(tmp_path)
    w.lake.close()
    con = open_connection(w.settings, read_only=False)
    con.execute(f"DROP TABLE {system.BULK_IMPORTS}")
    con.execute(
        f"CREATE TABLE {system.BULK_IMPORTS} (database_name VARCHAR, table_name VARCHAR, "
        "unique_id VARCHAR, records BIGINT, journal_shard VARCHAR, journal_seq BIGINT, "
        "time BIGINT)"
    )
    con.execute(f"INSERT INTO {system.BULK_IMPORTS} VALUES ('db', 't', 'old', 2, 's', 1, 1)")
    con.close()
    w.lake = Lake.open(w.settings)
    w.append(w.upload("old", 2, attempt=""))
    w.append(w.upload("new", 1))
    report = w.loader().step(NOW + 10)
    assert (report.rows, report.duplicates) == (1, 2)
    assert w.rows(f"SELECT unique_id, account_id FROM {system.BULK_IMPORTS} ORDER BY 1") == [
        ("new", 1),
        ("old", None),
    ]
    w.close()
