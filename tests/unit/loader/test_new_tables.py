"""A burst of new tables does not hold back the records of existing tables: each step
appends to every existing table it read and creates a few new ones, the accounts in
turn; the rest wait, re-read in place, and every record still lands exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.loader.runner import within_tables
from tests.unit.loader.test_loader import LATER, NOW_MS, World, errors, make_world, sample

PER_STEP = 3
NEW = [f"n{i}" for i in range(10)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, loader_new_tables_per_commit=PER_STEP)
    w.store.create_database("db2", 2)
    yield w
    w.lake.close()
    w.store.close()


def burst(w: World) -> None:
    """An existing table ``old``; then ten new tables of account 1, a refused record,
    account 2's first table, and one more record for ``old``, in that order."""
    w.send({"i": 0}, table="old")
    assert w.loader().step(LATER).rows == 1
    for name in NEW:
        w.send({"n": name}, table=name)
    w.send({"i": -1}, table="old", reject="invalid_json")
    w.send({"x": 1}, key=w.other, database="db2", table="x")
    w.send({"i": 1}, table="old")


def tables(w: World, database: str = "db") -> set[str]:
    return set(w.lake.tables(database))


def test_existing_tables_load_at_once_and_new_ones_a_few_a_step(world: World) -> None:
    burst(world)
    loader = world.loader()
    released = len(world.reader.released)
    report = loader.step(LATER)
    # The record behind the burst is loaded in the first step, and so is account 2's
    # first table (the accounts take turns), with account 1's first two new tables.
    assert world.rows("SELECT i FROM db.old ORDER BY i") == [(0,), (1,)]
    assert tables(world) == {"old", "n0", "n1"}
    assert tables(world, "db2") == {"x"}
    assert report.held_tables == len(NEW) - 2
    assert report.held_seconds > 0
    assert report.lag_seconds == 0  # nothing waits but the new tables' records
    assert sample("tdedge_loader_new_tables_waiting") == len(NEW) - 2
    # The positions stay, and the import error waits with them, so nothing is lost
    # and nothing is written twice if the loader stops here.
    assert world.lake.positions() == {"s0": 1}
    assert errors(world) == []
    # Nor is anything released from the journal.
    assert world.reader.released[released:] == []

    steps = 1
    while world.lake.positions() != {"s0": 14}:
        loader.step(LATER)
        steps += 1
        assert steps < 10
    assert steps == 1 + 3  # 8 waiting tables, 3 a step
    assert tables(world) == {"old", *NEW}
    for name in NEW:
        assert world.rows(f"SELECT n FROM db.{name}") == [(name,)]
    assert world.rows("SELECT i FROM db.old ORDER BY i") == [(0,), (1,)]
    assert world.rows("SELECT x FROM db2.x") == [(1,)]
    assert [e["reason"] for e in errors(world)] == ["invalid_json"]
    assert sample("tdedge_loader_new_tables_waiting") == 0


def test_a_loader_that_stops_between_steps_loads_each_record_once(world: World) -> None:
    burst(world)
    world.loader().step(LATER)
    world.loader().step(LATER)  # a new loader each step: what it knows is in the lake
    for _ in range(5):
        world.loader().step(LATER)
    assert world.lake.positions() == {"s0": 14}
    for name in NEW:
        assert world.rows(f"SELECT count(*) FROM db.{name}") == [(1,)]
    assert world.rows("SELECT i FROM db.old ORDER BY i") == [(0,), (1,)]
    assert world.rows("SELECT count(*) FROM db2.x") == [(1,)]
    assert len(errors(world)) == 1


def test_records_that_waited_long_enough_get_their_tables_created(tmp_path: Path) -> None:
    w = make_world(tmp_path, loader_new_tables_per_commit=PER_STEP, loader_new_tables_hold_s=5)
    w.store.create_database("db2", 2)
    burst(w)
    report = w.loader().step(LATER)  # the records arrived 10 s before
    assert report.held_tables == 0
    assert tables(w) == {"old", *NEW}
    assert w.lake.positions() == {"s0": 14}
    w.lake.close()
    w.store.close()


def group(shard: str, seq: int, at_ms: int, *tables: str) -> JournalGroup:
    envs = [Envelope(NOW_MS + at_ms, "legacy", "db", t, b"k", b"{}") for t in tables]
    return JournalGroup(shard, seq, envs)


def test_new_tables_past_the_step_s_share_do_not_cut_a_batch() -> None:
    g1, g2 = group("s0", 1, 0, "a", "n1"), group("s0", 2, 10, "n2", "n3")
    g3 = group("s0", 3, 20, "b")
    groups = [g1, g2, g3]
    assert within_tables(groups, 2) == [g1]  # counted as any table: a, n1
    is_new = lambda key: key[1].startswith("n")  # noqa: E731
    # a, b and one new table fit in 3; the other new tables wait and cost nothing.
    assert within_tables(groups, 3, is_new, 1) == groups
    assert within_tables(groups, 2, is_new, 1) == [g1, g2]
