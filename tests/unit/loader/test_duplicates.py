"""SDK events resent with the same record_uuid load once: the loader against a real
DuckLake, control store and record_uuid ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.errors import LakeError
from tdedge.journal.envelope import Envelope
from tdedge.lake.lake import Lake
from tdedge.loader.record_ids import RecordIds, record_key
from tdedge.loader.runner import Loader
from tests.unit.loader.test_loader import (
    LATER,
    NOW,
    NOW_MS,
    CrashingLake,
    World,
    errors,
    make_world,
    sample,
)

DAY = 86400.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.lake.close()
    w.store.close()


def loader(w: World, now: float = NOW, lake: Lake | None = None) -> Loader:
    """A loader as ``serve`` runs it: its ledger opened afresh, as after a restart."""
    directory = Directory(w.store, ttl_s=60)
    ids = RecordIds.open(w.settings.record_ids_db)
    return Loader(
        w.settings, w.reader, directory, lake or w.lake, clock=lambda: now, record_ids=ids
    )


def send(
    w: World,
    n: int,
    uuid: str = "",
    *,
    table: str = "t",
    key: str | None = None,
    group: bool = False,
    database: str = "db",
) -> None:
    record = {"n": n, "record_uuid": uuid} if uuid else {"n": n}
    env = Envelope(
        NOW_MS,
        "ingest",
        database,
        table,
        hash_key(key or w.master),
        msgspec.json.encode(record),
        record_id=f"0190a1b2-c3d4-7e5f-8a9b-{n:012x}",
        record_uuid=uuid,
    )
    w.reader.append(env, group=group)


def ns(w: World, table: str = "t") -> list[int]:
    return [n for (n,) in w.rows(f"SELECT n FROM db.{table} ORDER BY n")]


def test_copies_in_one_batch_and_one_request_load_once(world: World) -> None:
    before = sample("tdedge_record_duplicates_total")
    send(world, 1, "a")
    send(world, 2, "a", group=True)  # the same request: one journal group
    send(world, 3, "b")
    send(world, 4, "a")  # another request, same batch
    send(world, 5)  # no record_uuid: never a duplicate
    send(world, 6)
    report = loader(world).step(LATER)
    assert (report.rows, report.record_duplicates, report.entries) == (4, 2, 6)
    assert ns(world) == [1, 3, 5, 6]
    (error,) = errors(world)
    assert error["reason"] == "duplicate_record"
    assert msgspec.json.decode(error["record"]) == {"record_uuids": ["a", "a"], "duplicates": 2}
    assert "0 by an earlier batch, 2 earlier in this batch" in error["detail"]
    assert (error["door"], error["database_name"], error["table_name"]) == ("ingest", "db", "t")
    assert error["account_id"] == 1
    assert sample("tdedge_record_duplicates_total") == before + 2


def test_a_resend_after_a_restart_is_dropped(world: World) -> None:
    send(world, 1, "a")
    send(world, 2, "b")
    loader(world).step(LATER)
    send(world, 3, "a")  # the SDK never saw the answer: the same event again
    send(world, 4, "c")
    report = loader(world).step(LATER + 60)  # a new loader process, the same ledger
    assert (report.rows, report.record_duplicates) == (1, 1)
    assert ns(world) == [1, 2, 4]
    (error,) = errors(world)
    assert "1 by an earlier batch, 0 earlier in this batch" in error["detail"]


def test_ids_are_per_account_database_and_table(world: World) -> None:
    world.store.create_database("db2", 2)
    send(world, 1, "a")
    send(world, 2, "a", table="u")
    send(world, 3, "a", key=world.other, database="db2")
    assert loader(world).step(LATER).rows == 3
    assert record_key(1, "db", "t", "a") != record_key(1, "db", "u", "a")
    assert record_key(1, "db", "t", "a") != record_key(2, "db", "t", "a")
    assert record_key(1, "db", "t\0a", "") != record_key(1, "db", "t", "\0a")


def test_a_failed_commit_loads_its_claimed_events_on_the_next_attempt(world: World) -> None:
    send(world, 1, "a")
    send(world, 2, "a")
    crashing = CrashingLake.open(world.settings)
    with pytest.raises(LakeError):
        loader(world, lake=crashing).step(LATER)
    crashing.close()
    ids = RecordIds.open(world.settings.record_ids_db)
    assert ids.count() == 1  # claimed before the commit that failed
    ids.close()
    report = loader(world).step(LATER)
    assert (report.rows, report.record_duplicates) == (1, 1)
    assert ns(world) == [1]


def test_events_refused_before_their_table_do_not_claim_their_id(world: World) -> None:
    bad = "1/0000000000000000000000000000000000000000"
    send(world, 1, "a", key=bad)  # unknown key: an import error
    loader(world).step(LATER)
    send(world, 2, "a")  # the app fixed its key: the event loads
    assert loader(world).step(LATER).rows == 1
    assert ns(world) == [2]


def test_events_past_the_table_limit_do_not_claim_their_id(tmp_path: Path) -> None:
    w = make_world(tmp_path, max_tables_per_account=1)
    try:
        send(w, 1, table="first")
        send(w, 2, "a", table="second")  # refused: table_limit
        loader(w).step(LATER)
        assert [e["reason"] for e in errors(w)] == ["table_limit"]
        ids = RecordIds.open(w.settings.record_ids_db)
        assert ids.count() == 0
        ids.close()
    finally:
        w.lake.close()
        w.store.close()


def test_ids_are_forgotten_after_the_window(world: World) -> None:
    send(world, 1, "a")
    loader(world).step(LATER)
    window = world.settings.record_uuid_window_s
    assert window == DAY
    loader(world, now=NOW + window - 60).compact(NOW + window - 60)
    send(world, 2, "a")
    assert loader(world).step(LATER).rows == 0  # within the window: dropped
    loader(world, now=NOW + window + 60).compact(NOW + window + 60)
    send(world, 3, "a")
    assert loader(world).step(LATER).rows == 1  # past it: a new event as far as we know
    assert ns(world) == [1, 3]


def test_forget_works_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdedge.loader import record_ids

    monkeypatch.setattr(record_ids, "FORGET_CHUNK", 3)
    ids = RecordIds.open(tmp_path / "ids.sqlite")
    ids.claim({record_key(1, "d", "t", str(i)): ("s", 1, i) for i in range(10)}, 100)
    ids.claim({record_key(1, "d", "t", "new"): ("s", 2, 0)}, 200)
    ids.claim({record_key(1, "d", "t", "0"): ("s", 9, 9)}, 300)  # an owner keeps its id
    assert ids.owners([record_key(1, "d", "t", "0")]) == {record_key(1, "d", "t", "0"): ("s", 1, 0)}
    assert ids.forget(150) == 10
    assert ids.count() == 1
    ids.close()


def test_many_ids_in_one_lookup(tmp_path: Path) -> None:
    ids = RecordIds.open(tmp_path / "ids.sqlite")
    keys = {record_key(1, "d", "t", str(i)): ("s", 1, i) for i in range(25_000)}
    ids.claim(keys, 100)
    assert ids.owners(list(keys)) == keys
    ids.close()


def test_other_records_cost_no_lookup(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lookup(*_: Any) -> Any:
        raise AssertionError("looked up a batch without record_uuids")

    monkeypatch.setattr(RecordIds, "owners", no_lookup)
    for n in range(5):
        send(world, n)
    assert loader(world).step(LATER).rows == 5
