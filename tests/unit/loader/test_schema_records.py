"""The type rule applied to whole batches (loader/records.py): columns, conflicts, time."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from tdedge.loader.records import RecordColumns, to_columns

T0 = 1_700_000_000
ARRIVED = 1_800_000_000


def build(records: list[dict[str, Any]], existing: dict[str, str] | None = None) -> RecordColumns:
    return to_columns(records, [ARRIVED + i for i in range(len(records))], existing)


def rows(result: RecordColumns) -> list[dict[str, Any]]:
    return list(result.table.to_pylist())


def types(result: RecordColumns) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in result.table.schema}


def conflicts(result: RecordColumns) -> list[dict[str, Any] | None]:
    column = result.table.column("td_type_conflicts").to_pylist()
    return [None if c is None else json.loads(c) for c in column]


def test_plain_records_become_typed_columns_with_time_first() -> None:
    result = build(
        [
            {"time": T0, "n": 1, "x": 0.5, "s": "a", "b": True, "l": [1, "2"], "d": {"k": None}},
            {"time": T0 + 1, "n": 2, "x": 1.5, "s": "b", "b": False, "l": [], "d": {}},
        ]
    )
    assert list(types(result)) == ["time", "n", "x", "s", "b", "l", "d"]
    assert types(result) == {
        "time": pa.int64(),
        "n": pa.int64(),
        "x": pa.float64(),
        "s": pa.string(),
        "b": pa.bool_(),
        "l": pa.string(),
        "d": pa.string(),
    }
    assert rows(result)[0] == {
        "time": T0,
        "n": 1,
        "x": 0.5,
        "s": "a",
        "b": True,
        "l": '[1,"2"]',
        "d": '{"k":null}',
    }
    assert result.conflicts == 0


def test_null_is_absent_and_all_null_keys_make_no_column() -> None:
    result = build([{"a": None, "b": 1}, {"a": None, "b": None}, {"b": 3}])
    assert list(types(result)) == ["time", "b"]
    assert [r["b"] for r in rows(result)] == [1, None, 3]


def test_names_fold_to_lower_case() -> None:
    result = build([{"UserId": "u1"}, {"userid": "u2"}, {"USERID": "u3"}])
    assert list(types(result)) == ["time", "userid"]
    assert [r["userid"] for r in rows(result)] == ["u1", "u2", "u3"]
    assert result.conflicts == 0


def test_two_keys_folding_alike_keep_the_first_and_the_other_goes_to_conflicts() -> None:
    result = build([{"Name": "first", "name": "second"}, {"name": "x", "NAME": "y"}])
    assert [r["name"] for r in rows(result)] == ["first", "x"]
    assert conflicts(result) == [{"name": "second"}, {"NAME": "y"}]
    assert result.conflicts == 2


def test_first_type_seen_wins_for_a_new_column() -> None:
    result = build([{"v": "text"}, {"v": 5}, {"v": True}])
    assert types(result)["v"] == pa.string()
    # VARCHAR takes everything, as JSON text.
    assert [r["v"] for r in rows(result)] == ["text", "5", "true"]
    assert result.conflicts == 0

    result = build([{"v": 5}, {"v": "text"}, {"v": 6}])
    assert types(result)["v"] == pa.int64()
    assert [r["v"] for r in rows(result)] == [5, None, 6]
    assert conflicts(result) == [None, {"v": "text"}, None]
    assert result.conflicts == 1


def test_a_float_widens_a_bigint_column_in_the_same_batch() -> None:
    result = build([{"v": 1}, {"v": 2.5}, {"v": 3}])
    assert types(result)["v"] == pa.float64()
    assert [r["v"] for r in rows(result)] == [1.0, 2.5, 3.0]
    assert "td_type_conflicts" not in types(result)


def test_a_float_widens_an_existing_bigint_column() -> None:
    result = build([{"v": 2.5}], existing={"time": "BIGINT", "v": "BIGINT"})
    assert types(result)["v"] == pa.float64()
    assert rows(result)[0]["v"] == 2.5


def test_values_that_do_not_fit_an_existing_column_are_kept_in_conflicts() -> None:
    existing = {"time": "BIGINT", "n": "BIGINT", "flag": "BOOLEAN", "x": "DOUBLE", "s": "VARCHAR"}
    result = build(
        [
            {"n": "seven", "flag": 1, "x": "1.5", "s": 9},
            {"n": 7, "flag": True, "x": 2, "s": "ok"},
        ],
        existing,
    )
    assert rows(result)[0] == {
        "time": ARRIVED,
        "n": None,
        "flag": None,
        "x": None,
        "s": "9",
        "td_type_conflicts": json.dumps(
            {"n": "seven", "flag": 1, "x": "1.5"}, separators=(",", ":")
        ),
    }
    assert rows(result)[1]["n"] == 7 and rows(result)[1]["flag"] is True
    assert rows(result)[1]["x"] == 2.0
    assert result.conflicts == 3


def test_a_column_where_nothing_fits_is_left_out_and_its_values_kept() -> None:
    result = build([{"flag": "yes"}], existing={"time": "BIGINT", "flag": "BOOLEAN"})
    assert list(types(result)) == ["time", "td_type_conflicts"]
    assert conflicts(result) == [{"flag": "yes"}]


def test_a_column_of_a_type_tdedge_does_not_write_keeps_values_in_conflicts() -> None:
    result = build([{"at": 5}], existing={"time": "BIGINT", "at": "TIMESTAMP"})
    assert "at" not in types(result)
    assert conflicts(result) == [{"at": 5}]


def test_huge_integers_are_never_rounded() -> None:
    big = 2**64 + 1
    result = build([{"id": big}])
    assert types(result)["id"] == pa.string()
    assert rows(result)[0]["id"] == str(big)

    result = build([{"id": 1}, {"id": big}])
    assert types(result)["id"] == pa.int64()
    assert [r["id"] for r in rows(result)] == [1, None]
    assert conflicts(result) == [None, {"id": big}]

    result = build([{"x": big}], existing={"time": "BIGINT", "x": "DOUBLE"})
    assert conflicts(result) == [{"x": big}]


def test_existing_column_names_match_whatever_their_case() -> None:
    result = build([{"n": 1}], existing={"time": "BIGINT", "N": "BOOLEAN"})
    assert conflicts(result) == [{"n": 1}]


def test_keys_that_cannot_be_columns_go_to_conflicts() -> None:
    result = build([{"": 1, "a\nb": 2, "td_type_conflicts": "mine", "ok": 3}])
    assert list(types(result)) == ["time", "ok", "td_type_conflicts"]
    assert conflicts(result) == [{"": 1, "a\nb": 2, "td_type_conflicts": "mine"}]


def test_time_uses_the_records_own_time_when_valid() -> None:
    result = build([{"time": T0}, {"time": float(T0 + 1)}, {"time": str(T0 + 2)}])
    assert [r["time"] for r in rows(result)] == [T0, T0 + 1, T0 + 2]
    assert "td_type_conflicts" not in types(result)


def test_time_falls_back_to_arrival_and_keeps_an_invalid_original() -> None:
    result = build(
        [
            {"time": "yesterday"},
            {"a": 1},
            {"time": None},
            {"Time": T0 * 1000},  # milliseconds
            {"time": T0 + 0.5},
            {"time": True},
        ]
    )
    assert [r["time"] for r in rows(result)] == [ARRIVED + i for i in range(6)]
    assert conflicts(result) == [
        {"time": "yesterday"},
        None,
        None,
        {"Time": T0 * 1000},
        {"time": T0 + 0.5},
        {"time": True},
    ]
    assert result.conflicts == 4


def test_time_is_always_bigint_even_for_an_empty_record() -> None:
    result = build([{}])
    assert types(result) == {"time": pa.int64()}
    assert rows(result) == [{"time": ARRIVED}]
