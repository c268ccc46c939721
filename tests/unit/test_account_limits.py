"""How many tables and databases an account may have: the loader's refusals and the
control store's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdedge.control.store import ControlStore
from tdedge.errors import LimitReached
from tests.unit.test_loader import LATER, errors, make_world


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
