"""A table's retention: the loader's compaction pass deletes its rows older than it,
and no other table's."""

from __future__ import annotations

from pathlib import Path

from tdedge.control.directory import Directory
from tdedge.control.retention import RetentionRules
from tdedge.loader.runner import Loader
from tests.unit.loader.test_loader import LATER, NOW, make_world

DAY = 86400


def test_rows_past_a_tables_retention_are_deleted_by_compaction(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    try:
        ages = [30 * DAY, 8 * DAY, 7 * DAY - 60, DAY, 0]
        for table in ("t", "u"):
            for age in ages:
                w.send({"time": int(NOW - age), "age": age}, table=table)
        rules = RetentionRules(w.store.engine)
        rules.set("db", "t", 7)
        rules.set("db", "gone", 1)  # a table that does not exist is passed over
        loader = Loader(
            w.settings,
            w.reader,
            Directory(w.store, ttl_s=60),
            w.lake,
            clock=lambda: NOW,
            retention=rules,
        )
        loader.step(LATER)
        assert len(w.rows("SELECT * FROM db.t")) == 5
        loader.compact(NOW)
        kept_t = sorted(a for (a,) in w.rows("SELECT age FROM db.t"))
        kept_u = sorted(a for (a,) in w.rows("SELECT age FROM db.u"))
        assert kept_t == [0, DAY, 7 * DAY - 60]
        assert kept_u == sorted(ages)

        rules.set("db", "t", None)  # keep everything from now on
        w.send({"time": int(NOW - 40 * DAY), "age": 40 * DAY}, table="t")
        loader.step(LATER)
        loader.compact(NOW)
        assert len(w.rows("SELECT * FROM db.t")) == 4
    finally:
        w.lake.close()
        w.store.close()


def test_retention_rules_are_set_shown_and_forgotten(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    try:
        rules = RetentionRules(w.store.engine)
        rules.set("db", "t", 30)
        rules.set("db", "t", 10)
        rules.set("db", "u", 5)
        rules.set("other", "t", 1)
        assert [tuple(r) for r in rules.all()] == [
            ("db", "t", 10),
            ("db", "u", 5),
            ("other", "t", 1),
        ]
        assert rules.all()[0].cutoff(NOW) == int(NOW - 10 * DAY)
        rules.forget_table("db", "u")
        rules.forget_database("other")
        assert rules.get("db", "t") == 10
        assert rules.get("db", "u") is None
        assert [tuple(r) for r in rules.all()] == [("db", "t", 10)]
    finally:
        w.lake.close()
        w.store.close()
