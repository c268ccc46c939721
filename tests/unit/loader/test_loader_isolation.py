"""One table cannot stop the loader: too-wide records, and tables the lake refuses to
commit or the loader cannot shape, are refused with a reason while other tables load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tdedge.errors import LakeError
from tdedge.lake.batch import Batch
from tdedge.lake.lake import Lake
from tdedge.loader import runner
from tdedge.loader.limits import columns_refusal, record_columns, too_wide
from tdedge.loader.records import to_columns as built
from tests.unit.loader.test_loader import LATER, World, errors, make_world

# Past SQLite's 2,000 columns in DuckLake's inlined-data table: the commit fails.
TOO_WIDE_FOR_SQLITE = 2_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.lake.close()
    w.store.close()


@pytest.fixture
def unguarded(tmp_path: Path) -> Iterator[World]:
    """A world whose column limit is above what the lake takes, so that a wide record
    reaches the lake and fails there, at commit time, for real."""
    w = make_world(tmp_path, max_table_columns=10_000)
    yield w
    w.lake.close()
    w.store.close()


def wide(n: int, prefix: str = "k") -> dict[str, int]:
    return {f"{prefix}{i}": i for i in range(n)}


def fail_twice(loader: runner.Loader) -> None:
    for _ in range(runner.SET_ASIDE_AFTER_FAILURES):
        with pytest.raises(LakeError):
            loader.step(LATER)


def test_a_table_the_lake_refuses_at_commit_is_set_aside_and_the_others_load(
    unguarded: World,
) -> None:
    w = unguarded
    w.send({"i": 1}, table="t")
    w.send(wide(TOO_WIDE_FOR_SQLITE), table="wide")
    w.send({"i": 2}, table="t")
    w.send({"j": 1}, table="u")
    loader = w.loader()
    fail_twice(loader)
    assert w.lake.positions() == {}

    # Committing tables apart may take more than one step's time on a busy machine: it
    # goes on at the next step, from where it stopped.
    rejected = 0
    for _ in range(20):
        rejected += loader.step(LATER).rejected
        if rejected:
            break
    assert rejected == 1
    assert w.rows("SELECT i FROM db.t ORDER BY i") == [(1,), (2,)]
    assert w.rows("SELECT j FROM db.u") == [(1,)]
    (error,) = errors(w)
    assert (error["reason"], error["table_name"], error["account_id"]) == ("load_failed", "wide", 1)
    assert "column" in error["detail"] and len(error["detail"]) < 2_200
    assert len(json.loads(error["record"])) == TOO_WIDE_FOR_SQLITE
    assert w.lake.positions() == {"s0": 4}
    assert "wide" not in w.lake.tables("db")

    # Loading goes on as usual, and compaction forgets the marks the positions passed.
    w.send({"i": 3}, table="t")
    assert loader.step(LATER).rows == 1
    assert w.lake.marks()
    w.lake.compact(LATER)
    assert w.lake.marks() == {}
    assert w.rows("SELECT count(*) FROM db.t") == [(3,)]


def test_a_lake_that_refuses_every_commit_gets_nothing_set_aside(world: World) -> None:
    """When the lake itself is unwell, the last commit fails too: nothing is refused."""

    class BrokenLake(Lake):
        def commit(self, batch: Batch) -> None:
            raise LakeError("disk I/O error")

    world.send({"i": 1}, table="t")
    world.send({"j": 1}, table="u")
    broken = BrokenLake.open(world.settings)
    loader = world.loader(broken)
    for _ in range(4):
        with pytest.raises(LakeError):
            loader.step(LATER)
    broken.close()
    assert errors(world) == []
    assert world.loader().step(LATER).rows == 2


def test_a_moment_of_trouble_in_the_lake_sets_nothing_aside(world: World) -> None:
    """A table whose commit apart fails once is tried again before it is blamed."""
    failures = iter([True, True, True, False])

    class FlakyLake(Lake):
        def commit(self, batch: Batch) -> None:
            if next(failures, False):
                raise LakeError("something passing")
            super().commit(batch)

    world.send({"i": 1}, table="t")
    flaky = FlakyLake.open(world.settings)
    loader = world.loader(flaky)
    fail_twice(loader)
    assert loader.step(LATER).rows == 1  # failed apart once, then committed
    assert errors(world) == []
    assert world.rows("SELECT i FROM db.t") == [(1,)]
    flaky.close()


def test_an_interrupted_isolation_loads_every_row_once(unguarded: World) -> None:
    """The loader dies after committing the good tables apart, before the last commit
    that moves the positions: a new one skips what the load marks say is loaded."""
    w = unguarded
    script = textwrap.dedent(
        f"""
        import os
        from tdedge.config import Settings
        from tdedge.control.directory import Directory
        from tdedge.control.store import ControlStore
        from tdedge.errors import LakeError
        from tdedge.lake.lake import Lake
        from tdedge.loader.runner import Loader
        from tests.unit.loader.test_loader import LATER, World, MemoryReader

        class DyingLake(Lake):
            def commit(self, batch):
                if batch.positions and not batch.tables:
                    os._exit(9)  # the good tables are in, the positions never move
                super().commit(batch)

        s = Settings.from_json({w.settings.to_json()!r})
        store = ControlStore.open(s.control_db)
        w = World(s, store, MemoryReader(), DyingLake.open(s), {w.master!r}, "", "")
        w.send({{"i": 1}}, table="t")
        w.send({{f"k{{i}}": i for i in range({TOO_WIDE_FOR_SQLITE})}}, table="wide")
        w.send({{"i": 2}}, table="t")
        w.send({{"j": 1}}, table="u")
        loader = Loader(s, w.reader, Directory(store, ttl_s=60), w.lake)
        for _ in range(5):
            try:
                loader.step(LATER)
            except LakeError:
                pass
        """
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True)
    assert done.returncode == 9, done.stderr.decode()

    # The same journal entries, read again by a new loader.
    w.send({"i": 1}, table="t")
    w.send(wide(TOO_WIDE_FOR_SQLITE), table="wide")
    w.send({"i": 2}, table="t")
    w.send({"j": 1}, table="u")
    lake = Lake.open(w.settings)
    assert lake.positions() == {}
    assert lake.query("SELECT i FROM db.t ORDER BY i").rows == [(1,), (2,)]
    loader = w.loader(lake)
    report: Any = None
    for _ in range(6):
        try:
            report = loader.step(LATER)
            break
        except LakeError:
            continue
    assert report is not None and report.rejected == 1
    assert lake.query("SELECT i FROM db.t ORDER BY i").rows == [(1,), (2,)]
    assert lake.query("SELECT j FROM db.u").rows == [(1,)]
    assert [e["reason"] for e in errors(w)] == ["load_failed"]
    assert lake.positions() == {"s0": 4}
    lake.close()


def test_a_table_whose_rows_cannot_be_built_is_set_aside_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fragile(records: Any, received_s: Any, existing: Any, ids: Any = None) -> Any:
        if any("poison" in r for r in records):
            raise ValueError("cannot build these rows")
        return built(records, received_s, existing, ids)

    monkeypatch.setattr(runner, "to_columns", fragile)
    world.send({"poison": 1}, table="bad")
    world.send({"i": 1}, table="t")
    report = world.loader().step(LATER)
    assert (report.rows, report.rejected) == (1, 1)
    (error,) = errors(world)
    assert error["reason"] == "load_failed" and "cannot build these rows" in error["detail"]
    assert world.rows("SELECT i FROM db.t") == [(1,)]


def test_records_past_the_column_limit_are_refused_and_the_rest_of_the_table_loads(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path, max_table_columns=10)
    w.send(wide(5, "a"), table="t")  # 6 columns with time
    w.send(wide(5, "b"), table="t")  # would make 11
    w.send({"a0": 7, "A1": 8, "nothing": None}, table="t")  # no new column
    w.send(wide(4, "c"), table="t")  # 10 with time: fits
    report = w.loader().step(LATER)
    assert (report.rows, report.rejected) == (3, 1)
    (error,) = errors(w)
    assert error["reason"] == "too_many_columns" and json.loads(error["record"]) == wide(5, "b")
    assert "max_table_columns" in error["detail"] and error["account_id"] == 1
    assert len(w.lake.columns("db", "t") or {}) == 10
    # A later batch that would widen it is refused too; known columns still load.
    w.send({"z": 1}, table="t")
    w.send({"a4": 9}, table="t")
    report = w.loader().step(LATER)
    assert (report.rows, report.rejected) == (1, 1)
    w.lake.close()
    w.store.close()


def test_record_columns_follow_the_type_rule() -> None:
    record = {"Name": "x", "name": "y", "empty": None, "": 1, "time": 5, "n": 1}
    assert record_columns(record) == {"time", "name", "n"}
    assert record_columns({"a": 1}, ("_tdedge_id",)) == {"time", "a", "_tdedge_id"}


def test_columns_refusal_on_text_and_objects() -> None:
    assert columns_refusal(b'{"a":1,"b":2}', 3) is None  # a, b, time
    assert columns_refusal(b'{"a":1,"b":2,"c":3}', 3) is not None
    assert columns_refusal({"a": 1, "b": 2}, 3, ("_tdedge_id",)) is not None
    # Colons inside strings and null values need no column.
    assert columns_refusal(b'{"a":"1:2:3:4","b":null}', 2) is None
    refusal = columns_refusal(json.dumps(wide(2_000)).encode(), 1_000)
    assert refusal is not None and "more than 1000 columns" in refusal


def test_too_wide_takes_records_in_order() -> None:
    records = [{"a": 1}, {"b": 1, "c": 1}, {"d": 1}, {"A": 2}]
    assert too_wide(records, {"time": "BIGINT"}, 3) == [1]  # d still fits after b, c
    assert too_wide(records, None, 10) == []
    # td_type_conflicts does not count; an existing table's columns do.
    existing = {"time": "BIGINT", "a": "BIGINT", "td_type_conflicts": "VARCHAR"}
    assert too_wide([{"b": 1}], existing, 3) == []
    assert too_wide([{"b": 1, "c": 2}], existing, 3) == [0]
    # The column the loader adds itself (tdedge's id) counts, in a new table too.
    assert too_wide([{"a": 1}], None, 2) == []
    assert too_wide([{"a": 1}], None, 2, ("_tdedge_id",)) == [0]
