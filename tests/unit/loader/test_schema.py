"""The type rule's pure functions (loader/schema.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tdedge.loader.schema import (
    column_type,
    convert,
    fits,
    fold,
    unix_time,
    usable_name,
    value_type,
    widened,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "BIGINT"),
        (-(2**63), "BIGINT"),
        (2**63 - 1, "BIGINT"),
        (2**63, "VARCHAR"),  # beyond int64: exact digits, never rounded
        (-(2**63) - 1, "VARCHAR"),
        (1.5, "DOUBLE"),
        ("x", "VARCHAR"),
        (True, "BOOLEAN"),  # bool is not an int here
        (False, "BOOLEAN"),
        ([1, 2], "VARCHAR"),
        ({"a": 1}, "VARCHAR"),
        (None, None),
    ],
)
def test_value_type(value: Any, expected: str | None) -> None:
    assert value_type(value) == expected


def test_only_bigint_widens_and_only_to_double() -> None:
    assert widened("BIGINT", "DOUBLE") == "DOUBLE"
    assert widened("DOUBLE", "BIGINT") == "DOUBLE"
    assert widened("BIGINT", "VARCHAR") == "BIGINT"
    assert widened("BOOLEAN", "BIGINT") == "BOOLEAN"
    assert widened("VARCHAR", "DOUBLE") == "VARCHAR"


def test_column_type_first_seen_wins_then_widens() -> None:
    assert column_type(None, ["BIGINT", "VARCHAR"]) == "BIGINT"
    assert column_type(None, ["VARCHAR", "BIGINT"]) == "VARCHAR"
    assert column_type(None, ["BIGINT", "DOUBLE"]) == "DOUBLE"
    assert column_type(None, ["BIGINT", "VARCHAR", "DOUBLE"]) == "DOUBLE"
    assert column_type("BIGINT", ["DOUBLE"]) == "DOUBLE"
    assert column_type("BOOLEAN", ["BIGINT", "DOUBLE"]) == "BOOLEAN"
    assert column_type(None, []) is None
    # A type tdedge never creates stays as it is.
    assert column_type("TIMESTAMP", ["BIGINT"]) == "TIMESTAMP"


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        (1, "BIGINT", True),
        (2**63, "BIGINT", False),
        (1.0, "BIGINT", False),
        ("1", "BIGINT", False),
        (True, "BIGINT", False),
        (1, "DOUBLE", True),
        (1.5, "DOUBLE", True),
        (2**64, "DOUBLE", False),
        (True, "DOUBLE", False),
        ("1.5", "DOUBLE", False),
        (True, "BOOLEAN", True),
        (1, "BOOLEAN", False),
        ("true", "BOOLEAN", False),
        ("x", "VARCHAR", True),
        (1, "VARCHAR", True),
        ({"a": [1]}, "VARCHAR", True),
        (1, "TIMESTAMP", False),
    ],
)
def test_fits(value: Any, column: str, expected: bool) -> None:
    assert fits(value, column) is expected


def test_convert_varchar_keeps_json_text_and_double_takes_ints() -> None:
    assert convert("x", "VARCHAR") == "x"
    assert convert(12, "VARCHAR") == "12"
    assert convert(True, "VARCHAR") == "true"
    assert convert({"a": [1, None]}, "VARCHAR") == '{"a":[1,null]}'
    assert convert(2**70, "VARCHAR") == str(2**70)
    assert convert(3, "DOUBLE") == 3.0 and isinstance(convert(3, "DOUBLE"), float)
    assert convert(7, "BIGINT") == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, 1_700_000_000),
        (0, 0),
        (4_102_444_799, 4_102_444_799),
        (4_102_444_800, None),  # 2100: out of the sane range
        (1_700_000_000_000, None),  # milliseconds by mistake
        (-1, None),
        (1_700_000_000.0, 1_700_000_000),
        (1.7e9, 1_700_000_000),
        (1_700_000_000.5, None),  # not a whole number of seconds
        ("1700000000", 1_700_000_000),
        (" 1700000000 ", 1_700_000_000),
        ("1.7e9", 1_700_000_000),
        ("1700000000.25", None),
        ("2024-01-01T00:00:00Z", None),
        ("nan", None),
        ("inf", None),
        ("9" * 5000, None),
        ("", None),
        (True, None),
        (None, None),
        ([1_700_000_000], None),
    ],
)
def test_unix_time(value: Any, expected: int | None) -> None:
    assert unix_time(value) == expected


def test_names_fold_to_lower_case_and_odd_keys_are_not_columns() -> None:
    assert fold("UserId") == "userid"
    assert usable_name("user id") and usable_name("page.url") and usable_name('a"b')
    assert not usable_name("")
    assert not usable_name("x" * 256)
    assert usable_name("x" * 255)
    assert not usable_name("a\nb")
    assert not usable_name("a\x00")
    assert not usable_name("td_type_conflicts")
    assert not usable_name("_ducklake_internal_row_id")
    assert usable_name("_ducklake") and usable_name("rowid")
