"""How much one account can make the loader do: how many tables and databases it may
have (the loader's refusals and the control store's), and how many tables one commit
writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdedge.control.store import ControlStore
from tdedge.errors import LimitReached
from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.loader.runner import within_tables
from tests.unit.loader.test_loader import LATER, NOW_MS, errors, make_world


def test_records_for_a_table_past_the_limit_are_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path, max_tables_per_account=2)
    w.send({"i": 1}, table="t1")
    w.loader().step(LATER)
    w.send({"i": 2}, table="t2")
    w.send({"i": 3}, table="t3")
    w.send({"i": 4}, table="t1")  # an existing table still loads
    w.store.create_database("other", 2)
    w.send({"i": 5}, key=w.other, database="other", table="t3")  # another account
    report = w.loader().step(LATER)
    assert (report.rows, report.rejected) == (3, 1)
    (error,) = errors(w)
    assert (error["reason"], error["table_name"], error["account_id"]) == ("table_limit", "t3", 1)
    assert "max_tables_per_account" in error["detail"]
    assert w.lake.tables("db") == ["t1", "t2"]
    assert w.lake.tables("other") == ["t3"]
    w.lake.close()
    w.store.close()


def test_a_master_key_cannot_create_databases_past_the_limit(tmp_path: Path) -> None:
    w = make_world(tmp_path, max_databases_per_account=2)
    limited = ControlStore.open(w.settings.control_db, w.settings.max_databases_per_account)
    w.store.close()
    w.store = limited  # what the loader process opens
    w.send({"i": 1}, database="second")
    w.send({"i": 2}, database="third")
    report = w.loader().step(LATER)
    assert (report.rows, report.rejected) == (1, 1)
    (error,) = errors(w)
    assert (error["reason"], error["database_name"]) == ("database_limit", "third")
    assert "max_databases_per_account" in error["detail"]
    w.lake.close()
    w.store.close()


def test_the_control_store_counts_databases_per_account(tmp_path: Path) -> None:
    store = ControlStore.open(tmp_path / "control.sqlite", max_databases_per_account=2)
    store.create_database("a", 1)
    store.create_database("b", 1)
    store.create_database("c", 2)
    with pytest.raises(LimitReached) as refused:
        store.create_database("d", 1)
    assert refused.value.code == "database_limit"
    assert [d.name for d in store.list_databases()] == ["a", "b", "c"]
    store.close()


def group(shard: str, seq: int, at_ms: int, *tables: str) -> JournalGroup:
    envs = [Envelope(NOW_MS + at_ms, "legacy", "db", t, b"k", b"{}") for t in tables]
    return JournalGroup(shard, seq, envs)


def test_a_batch_takes_the_oldest_groups_up_to_the_table_limit() -> None:
    g1, g2, g3 = group("s0", 1, 0, "a", "b"), group("s0", 2, 20, "c"), group("s0", 3, 30, "a")
    h1, h2 = group("s1", 1, 10, "d"), group("s1", 2, 40, "a")
    groups = [g1, g2, g3, h1, h2]
    assert within_tables(groups, 3) == [g1, h1]  # a, b, d; c would be the fourth
    assert within_tables(groups, 4) == [g1, g2, g3, h1, h2]
    # One group is always taken, however many tables it names; and never a later group
    # of a shard without the earlier ones.
    assert within_tables(groups, 1) == [g1]
    late = group("s1", 3, 5, "b")  # arrived "before" h2 by its clock, but after it
    assert within_tables([g1, h1, h2, late], 3) == [g1, h1, h2, late]


def test_a_commit_writes_at_most_loader_batch_max_tables_tables(tmp_path: Path) -> None:
    w = make_world(tmp_path, loader_batch_max_tables=100, loader_new_tables_per_commit=100)
    for i in range(250):
        w.send({"i": i}, table=f"t{i}")
    loader = w.loader()
    assert [loader.step(LATER).rows for _ in range(4)] == [100, 100, 50, 0]
    assert w.lake.positions() == {"s0": 250}
    assert len(w.lake.tables("db")) == 250
    w.lake.close()
    w.store.close()
