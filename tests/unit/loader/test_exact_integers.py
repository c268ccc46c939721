"""Integers a DOUBLE column would round keep their exact value in td_type_conflicts."""

from __future__ import annotations

import json
from pathlib import Path

from tdedge.loader.records import to_columns
from tests.unit.loader.test_loader import LATER, make_world

BIG = 2**60 + 1  # a double holds 2**60 exactly, not 2**60 + 1
EXACT = 2**53  # the largest power of two below which every integer is exact


def test_a_big_integer_in_a_double_column_keeps_its_exact_value() -> None:
    built = to_columns(
        [{"n": BIG}, {"n": 1.5}, {"n": EXACT}, {"N": -BIG}], [0] * 4, {"n": "DOUBLE"}
    )
    rows = built.table.to_pylist()
    assert [r["n"] for r in rows] == [float(BIG), 1.5, float(EXACT), float(-BIG)]
    conflicts = [r["td_type_conflicts"] for r in rows]
    assert [None if c is None else json.loads(c) for c in conflicts] == [
        {"n": BIG},
        None,
        None,
        {"N": -BIG},
    ]
    assert built.conflicts == 2


def test_one_batch_that_widens_keeps_the_integers_before_the_float() -> None:
    rows = to_columns([{"n": BIG}, {"n": 0.5}], [0, 0], None).table.to_pylist()
    assert rows[0]["n"] == float(BIG) and json.loads(rows[0]["td_type_conflicts"]) == {"n": BIG}


def test_integers_stored_before_their_column_widens_keep_their_exact_value(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path)
    loader = w.loader()
    w.send({"n": BIG, "k": 1, "flag": True})
    w.send({"n": 7, "k": 2})
    w.send({"n": -BIG, "k": 3, "flag": "not a boolean"})
    loader.step(LATER)  # n is BIGINT, flag BOOLEAN: row 3's flag is a conflict already
    w.send({"n": 0.5, "k": 4})
    loader.step(LATER)  # n widens to DOUBLE
    assert (w.lake.columns("db", "t") or {})["n"] == "DOUBLE"
    rows = w.rows("SELECT k, n, td_type_conflicts FROM db.t ORDER BY k")
    assert [(k, n) for k, n, _ in rows] == [(1, float(BIG)), (2, 7.0), (3, float(-BIG)), (4, 0.5)]
    conflicts = [None if c is None else json.loads(c) for _, _, c in rows]
    assert conflicts == [{"n": BIG}, None, {"flag": "not a boolean", "n": -BIG}, None]
    w.lake.close()
    w.store.close()
