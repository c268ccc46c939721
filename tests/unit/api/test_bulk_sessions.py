"""Bulk Import sessions inside: which records of a part load, and the session store's
statuses, limits and retention."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tdedge.api import bulk_parts, bulk_sessions
from tdedge.api.bulk_parts import TIME_INVALID, TIME_MISSING, reason
from tdedge.api.msgpack_records import RECORD_TOO_LARGE, Record
from tdedge.api.wire import ApiError
from tdedge.config import Settings
from tdedge.control.bulk_sessions import (
    NOT_PERFORMED,
    PART_LIMIT,
    SESSION_COMMITTED,
    SESSION_FROZEN,
    SESSION_LIMIT,
    SESSION_NOT_FROZEN,
    STORAGE_LIMIT,
    BulkSessions,
    PartInfo,
    Session,
    WrongStatus,
)
from tdedge.errors import AlreadyExists, LimitReached, NotFound

NOW = 1_750_000_000.0
DAY = 86_400.0


def packed(*maps: Any) -> bytes:
    return b"".join(msgpack.packb(m) for m in maps)


def rec(obj: Any) -> Record:
    return Record(json.dumps(obj).encode())


# Which records load.


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"time": 1_700_000_000, "a": 1}, ""),
        ({"time": 1.7e9}, ""),
        ({"time": " 1700000000 "}, ""),
        ({"TIME": 1_700_000_000}, ""),
        # The first non-null value of a key folding to time is the time, as the loader has it.
        ({"time": None, "Time": 1_700_000_000}, ""),
        ({"a": 1}, TIME_MISSING),
        ({"time": None}, TIME_MISSING),
        ({"time": "yesterday"}, TIME_INVALID),
        ({"time": True}, TIME_INVALID),
        ({"time": [1_700_000_000]}, TIME_INVALID),
        ({"time": 1.5}, TIME_INVALID),
        ({"time": 1_700_000_000_000}, TIME_INVALID),  # milliseconds
        ({"time": -1}, TIME_INVALID),
    ],
)
def test_a_record_loads_only_with_a_usable_time(record: dict[str, Any], why: str) -> None:
    assert reason(rec(record)) == why


def test_a_record_too_large_is_an_error_record() -> None:
    assert reason(Record(b'{"time": 1700000000', too_large=True)) == RECORD_TOO_LARGE


def test_a_part_is_counted_gzipped_or_not() -> None:
    settings = Settings()
    body = packed({"time": 1_700_000_000}, {"x": 1}, {"time": "no"})
    for part in (body, gzip.compress(body), gzip.compress(body[:10]) + gzip.compress(body[10:])):
        assert bulk_parts.count(part, settings) == bulk_parts.Counts(3, 2)
    assert bulk_parts.count(b"", settings) == bulk_parts.Counts(0, 0)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (gzip.compress(packed([1, 2])), 400, "not_an_object"),
        (gzip.compress(b"\xc1"), 400, "invalid_msgpack"),
        (gzip.compress(packed({"time": 1}))[:-4], 400, "invalid_gzip"),
        (gzip.compress(packed({"time": 1})[:-1]), 400, "invalid_msgpack"),
        (gzip.compress(b"\x80" * 2_000), 413, "body_too_large"),
    ],
)
def test_a_part_that_is_not_msgpack_maps_is_refused_whole(
    body: bytes, status: int, code: str
) -> None:
    settings = Settings(import_max_inflated_bytes=1_000)
    with pytest.raises(ApiError) as e:
        bulk_parts.count(body, settings)
    assert (e.value.status, e.value.code) == (status, code)


def test_error_records_are_listed_as_uploaded_up_to_a_limit() -> None:
    settings = Settings(import_max_record_bytes=100)
    bodies = [
        gzip.compress(packed({"time": 1_700_000_000}, {"n": 1}, {"s": "x" * 500})),
        packed({"time": "bad", "n": 2}),
    ]
    found = list(bulk_parts.error_records(bodies, settings, limit=10**6))
    assert found[0] == {"n": 1}
    assert list(found[1]) == [RECORD_TOO_LARGE]  # the start of its JSON, never all of it
    assert found[2] == {"time": "bad", "n": 2}
    assert list(bulk_parts.error_records(bodies, settings, limit=10)) == [{"n": 1}]


# The session store.


@pytest.fixture
def store(tmp_path: Path) -> BulkSessions:
    return BulkSessions.open(tmp_path / "sessions.sqlite")


def new(store: BulkSessions, name: str = "s1", account: int = 1, limit: int = 10) -> Session:
    return store.create(
        account_id=account,
        name=name,
        database="db",
        table="t",
        token=f"token-{account}-{name}",
        now=NOW,
        max_sessions=limit,
    )


def put(
    store: BulkSessions,
    session: Session,
    name: str,
    body: bytes = b"x" * 10,
    records: int = 3,
    errors: int = 1,
    max_parts: int = 10,
    max_bytes: int = 10**6,
) -> None:
    info = PartInfo(name=name, bytes=len(body), records=records, error_records=errors)
    store.put_part(session, info, body, NOW, max_parts, max_bytes)


def refusal(e: pytest.ExceptionInfo[Any]) -> str:
    return str(e.value.code)


def test_session_names_are_per_account_and_limited(store: BulkSessions) -> None:
    new(store, "s1", account=1)
    new(store, "s1", account=2)
    with pytest.raises(AlreadyExists):
        new(store, "s1", account=1)
    new(store, "s2", account=1, limit=2)
    with pytest.raises(LimitReached) as e:
        new(store, "s3", account=1, limit=2)
    assert refusal(e) == SESSION_LIMIT
    assert [s.name for s in store.of_account(1)] == ["s1", "s2"]
    assert store.get(3, "s1") is None
    with pytest.raises(NotFound):
        store.find(3, "s1")


def test_parts_are_stored_replaced_and_deleted(store: BulkSessions) -> None:
    session = new(store)
    put(store, session, "p1", b"one")
    put(store, session, "p2", b"two")
    put(store, session, "p1", b"ONE")  # the same name replaces
    assert store.part_names(session.id) == ["p1", "p2"]
    assert list(store.bodies(session.id)) == [b"ONE", b"two"]
    store.delete_part(session, "p2", NOW)
    assert store.part_names(session.id) == ["p1"]
    with pytest.raises(NotFound):
        store.delete_part(session, "p2", NOW)


def test_parts_per_session_and_bytes_per_account_are_limited(store: BulkSessions) -> None:
    session = new(store)
    put(store, session, "p1", max_parts=2)
    put(store, session, "p2", max_parts=2)
    put(store, session, "p2", max_parts=2)  # a replaced part is not one more
    with pytest.raises(LimitReached) as e:
        put(store, session, "p3", max_parts=2)
    assert refusal(e) == PART_LIMIT
    with pytest.raises(LimitReached) as e:
        store.part_room(session, "p3", 1, 2, 10**6)
    assert refusal(e) == PART_LIMIT
    other = new(store, "s2")
    # The account holds 20 bytes; 15 more pass 30, wherever they go.
    with pytest.raises(LimitReached) as e:
        put(store, other, "q1", b"y" * 15, max_bytes=30)
    assert refusal(e) == STORAGE_LIMIT
    put(store, session, "p1", b"z" * 20, max_bytes=30)  # replaces its own 10 bytes
    assert store.part_names(other.id) == []
    # Another account's bytes are its own.
    put(store, new(store, "s1", account=2), "p1", b"w" * 25, max_bytes=30)


def test_a_frozen_session_takes_no_parts_until_unfrozen(store: BulkSessions) -> None:
    session = new(store)
    put(store, session, "p1")
    store.freeze(1, "s1", NOW)
    store.freeze(1, "s1", NOW)  # again: nothing to do
    with pytest.raises(WrongStatus) as e:
        put(store, session, "p2")
    assert refusal(e) == SESSION_FROZEN
    with pytest.raises(WrongStatus) as e:
        store.delete_part(session, "p1", NOW)
    assert refusal(e) == SESSION_FROZEN
    assert not store.unfreeze(1, "s1", NOW).frozen
    put(store, session, "p2")


def test_perform_counts_a_frozen_session(store: BulkSessions) -> None:
    session = new(store)
    with pytest.raises(WrongStatus) as e:
        store.perform(1, "s1", NOW)
    assert refusal(e) == SESSION_NOT_FROZEN
    put(store, session, "p1", records=5, errors=2)
    put(store, session, "p2", records=4, errors=0)
    store.freeze(1, "s1", NOW)
    done = store.perform(1, "s1", NOW)
    assert (done.status, done.valid_records, done.error_records) == ("ready", 7, 2)
    assert (done.valid_parts, done.error_parts, done.expected) == (2, 0, 9)
    store.set_job(done.id, 42)
    assert store.find(1, "s1").job_id == 42
    # Unfrozen, it forgets its counts and is performed again.
    again = store.unfreeze(1, "s1", NOW)
    assert (again.status, again.valid_records) == ("uploading", None)


def test_a_commit_is_journaled_until_one_attempt_has_published(store: BulkSessions) -> None:
    session = new(store)
    put(store, session, "p1", records=3, errors=1)
    with pytest.raises(WrongStatus) as e:
        store.begin_commit(1, "s1", "a1", NOW)
    assert refusal(e) == NOT_PERFORMED
    store.freeze(1, "s1", NOW)
    store.perform(1, "s1", NOW)
    first = store.begin_commit(1, "s1", "a1", NOW)
    assert first is not None and (first.status, first.attempt) == ("committing", "a1")
    store.abort_commit(first.id, "a1", NOW)  # journaled nothing: ready again
    assert store.find(1, "s1").status == "ready"
    # An attempt that died unpublished is taken over by the next one.
    assert store.begin_commit(1, "s1", "a2", NOW) is not None
    third = store.begin_commit(1, "s1", "a3", NOW)
    assert third is not None and third.attempt == "a3"
    store.abort_commit(third.id, "a2", NOW)  # a stale attempt changes nothing
    store.published(third.id, "a3", 4, NOW)
    assert store.begin_commit(1, "s1", "a4", NOW) is None  # published: nothing to do
    with pytest.raises(WrongStatus) as e:
        store.unfreeze(1, "s1", NOW)
    assert refusal(e) == SESSION_COMMITTED
    with pytest.raises(WrongStatus) as e:
        store.perform(1, "s1", NOW)
    assert refusal(e) == SESSION_COMMITTED
    store.committed(third.id, NOW)
    assert store.find(1, "s1").status == "committed"
    assert store.begin_commit(1, "s1", "a5", NOW) is None


def test_published_counts_replace_the_upload_counts_when_they_differ(
    store: BulkSessions,
) -> None:
    session = new(store)
    put(store, session, "p1", records=3, errors=1)
    store.freeze(1, "s1", NOW)
    store.perform(1, "s1", NOW)
    started = store.begin_commit(1, "s1", "a1", NOW)
    assert started is not None
    store.published(started.id, "a1", 5, NOW)
    done = store.find(1, "s1")
    assert (done.valid_records, done.error_records, done.expected) == (4, 1, 5)


def test_deleting_a_session_deletes_its_parts(store: BulkSessions) -> None:
    session = new(store)
    put(store, session, "p1")
    store.delete(1, "s1")
    assert store.get(1, "s1") is None
    assert store.part_names(session.id) == []
    with pytest.raises(NotFound):
        store.delete(1, "s1")


def test_committed_sessions_and_idle_ones_expire(store: BulkSessions) -> None:
    done = new(store, "done")
    put(store, done, "p1")
    store.freeze(1, "done", NOW)
    store.perform(1, "done", NOW)
    store.begin_commit(1, "done", "a", NOW)
    store.committed(done.id, NOW)
    idle = new(store, "idle")
    put(store, idle, "p1")
    assert store.expire(NOW + 2 * DAY, retention_s=3 * DAY, expiry_s=30 * DAY) == 0
    assert store.expire(NOW + 4 * DAY, retention_s=3 * DAY, expiry_s=30 * DAY) == 1
    assert [s.name for s in store.of_account(1)] == ["idle"]
    assert store.part_names(done.id) == []
    assert store.expire(NOW + 31 * DAY, retention_s=3 * DAY, expiry_s=30 * DAY) == 1
    assert store.of_account(1) == []


def test_a_stored_part_survives_reopening(tmp_path: Path) -> None:
    first = BulkSessions.open(tmp_path / "s.sqlite")
    session = new(first)
    put(first, session, "p1", b"durable")
    first.close()
    again = BulkSessions.open(tmp_path / "s.sqlite")
    assert list(again.bodies(again.find(1, "s1").id)) == [b"durable"]


def test_expired_parts_give_their_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = BulkSessions.open(path)
    session = new(store)
    for i in range(4):
        put(store, session, f"p{i}", bytes(range(256)) * 4096, max_bytes=10**8)
    with sqlite3.connect(path) as db:
        before = db.execute("PRAGMA page_count").fetchone()[0]
    assert store.expire(NOW + 31 * DAY, retention_s=DAY, expiry_s=30 * DAY) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert db.execute("PRAGMA page_count").fetchone()[0] < before / 10


def test_parts_read_while_their_session_is_deleted_are_not_read_in_part(
    store: BulkSessions,
) -> None:
    session = new(store)
    put(store, session, "p1", b"one")
    put(store, session, "p2", b"two")
    reading = store.bodies(session.id)
    assert next(reading) == b"one"
    store.delete(1, "s1")
    with pytest.raises(NotFound):
        next(reading)


def test_a_part_that_would_leave_the_journal_no_room_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), journal_min_free_bytes=0, retry_after_s=7)
    bulk_sessions.room_for(settings, 1024)
    with pytest.raises(ApiError) as e:
        bulk_sessions.room_for(settings, 2**62)
    assert (e.value.status, e.value.code) == (503, "disk_full")
    assert ("retry-after", "7") in e.value.headers
