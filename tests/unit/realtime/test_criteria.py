"""Criteria: every operator, each negated, nesting, both forms, and the errors."""

from __future__ import annotations

from typing import Any

import pytest

from tdedge.realtime.criteria import Context, CriteriaError, Scope, compile_criteria

NOW = 1_800_000_000_000
SCOPE = Scope(attributes={"a", "b", "items", "seen"}, segments={"s1", "s2"})


def passes(raw: dict[str, Any], values: dict[str, Any], segments: set[str] | None = None) -> bool:
    node = compile_criteria(raw, SCOPE)
    ctx = Context({}, values, segments or set(), NOW)
    verdict = node.test(ctx)
    # explain must always agree with test: it is what `tdedge p13n explain` shows.
    assert node.explain(ctx).passed is verdict
    return verdict


CASES: list[tuple[str, Any, Any, bool]] = [
    # operator, expected, actual, verdict
    ("Equal", "women", "women", True),
    ("Equal", "women", "men", False),
    ("Equal", 3, 3.0, True),
    ("Equal", 3, "3", True),
    ("Equal", True, True, True),
    ("Equal", True, 1, False),
    ("Equal", "x", None, False),
    ("NotEqual", "x", "y", True),
    ("NotEqual", "x", "x", False),
    ("NotEqual", "x", None, False),
    ("NotEqual", "x", ["y", "x"], False),
    ("Greater", 1, 2, True),
    ("Greater", 2, 2, False),
    ("Greater", 1, "1.5", True),
    ("Greater", "b", "c", True),
    ("Greater", 1, None, False),
    ("Greater", 1, "abc", False),
    ("GreaterEqual", 2, 2, True),
    ("GreaterEqual", 2, 1.99, False),
    ("Less", 10, 9, True),
    ("Less", 10, 10, False),
    ("LessEqual", 10, 10, True),
    ("LessEqual", 10, 11, False),
    ("Between", [1, 5], 1, True),
    ("Between", [1, 5], 5, True),
    ("Between", [1, 5], 6, False),
    ("Between", ["a", "c"], "b", True),
    ("In", ["a", "b"], "b", True),
    ("In", ["a", "b"], "c", False),
    ("In", [1, 2], "2", True),
    ("In", ["a"], ["x", "a"], True),
    ("NotIn", ["a", "b"], "c", True),
    ("NotIn", ["a", "b"], "a", False),
    ("NotIn", ["a"], None, False),
    ("NotIn", ["a"], ["x", "a"], False),
    ("Contain", "shoe", "women-shoes", True),
    ("Contain", "hat", "women-shoes", False),
    ("Contain", "p1", ["p1", "p2"], True),
    ("Contain", "p", ["p1", "p2"], False),
    ("StartWith", "/checkout", "/checkout/done", True),
    ("StartWith", "/checkout", "/cart", False),
    ("StartWith", "/c", 5, False),
    ("EndWith", ".html", "/a.html", True),
    ("EndWith", ".html", "/a.htm", False),
    ("Regexp", r"^\d{3}-\d{4}$", "555-1234", True),
    ("Regexp", r"^\d{3}$", "5555", False),
    ("Regexp", "b", ["a", "abc"], True),
    ("TimeWithinPast", "1h", NOW - 3_599_000, True),
    ("TimeWithinPast", "1h", NOW - 3_601_000, False),
    ("TimeWithinPast", "1h", (NOW - 60_000) // 1000, True),  # unix seconds
    ("TimeWithinPast", "1d", "2027-01-14T09:00:00Z", True),  # NOW is 2027-01-15T08:00Z
    ("TimeWithinPast", "1d", "2027-01-14T07:00:00Z", False),
    ("TimeWithinPast", 60, "not a time", False),
]


@pytest.mark.parametrize(("op", "expected", "actual", "verdict"), CASES)
def test_operator_and_its_negation(op: str, expected: Any, actual: Any, verdict: bool) -> None:
    leaf = {"attribute": "a", "operator": op, "value": expected}
    assert passes(leaf, {"a": actual}) is verdict
    assert passes({**leaf, "not": True}, {"a": actual}) is (not verdict)


@pytest.mark.parametrize(("actual", "verdict"), [(None, True), ([], True), ("", True), (0, False)])
def test_is_null(actual: Any, verdict: bool) -> None:
    assert passes({"attribute": "a", "operator": "IsNull"}, {"a": actual}) is verdict
    assert passes({"attribute": "a", "operator": "IsNull", "not": True}, {"a": actual}) is (
        not verdict
    )
    assert passes({"attribute": "a", "operator": "IsNull"}, {}) is True


def test_time_within_past_reads_iso_and_milliseconds() -> None:
    iso = "2027-01-15T08:00:00+00:00"
    leaf = {"attribute": "a", "operator": "TimeWithinPast", "value": "2h"}
    ms = 1_800_000_000_000
    # NOW is 2027-01-15T08:00:00Z: an ISO time equal to now is within the past 2h.
    assert passes(leaf, {"a": iso}) is True
    assert passes(leaf, {"a": ms - 7_300_000}) is False
    assert passes(leaf, {"a": ms + 60_000}) is False  # in the future


def test_groups_nest() -> None:
    raw = {
        "all": [
            {"segment": "s1"},
            {
                "any": [
                    {"attribute": "a", "operator": "Equal", "value": 1},
                    {"not": {"segment": "s2"}},
                ]
            },
        ]
    }
    assert passes(raw, {"a": 1}, {"s1", "s2"}) is True
    assert passes(raw, {"a": 2}, {"s1", "s2"}) is False
    assert passes(raw, {"a": 2}, {"s1"}) is True
    assert passes(raw, {"a": 1}, set()) is False
    assert passes({**raw, "not": True}, {"a": 1}, set()) is True
    assert passes({"segment": "s1", "not": True}, {}, {"s1"}) is False


def test_treasure_data_json_form() -> None:
    raw = {
        "type": "Or",
        "conditions": [
            {"attribute": "a", "operator": "Greater", "value": 5},
            {"type": "And", "conditions": [{"segment": "s1"}, {"segment": "s2"}]},
        ],
    }
    assert passes(raw, {"a": 6}) is True
    assert passes(raw, {"a": 1}, {"s1"}) is False
    assert passes(raw, {"a": 1}, {"s1", "s2"}) is True


def test_event_columns() -> None:
    node = compile_criteria(
        {"column": "td_path", "operator": "StartWith", "value": "/checkout"}, Scope(profile=False)
    )
    assert node.test(Context({"td_path": "/checkout/x"}, {}, (), NOW)) is True
    assert node.test(Context({"td_path": "/x"}, {}, (), NOW)) is False


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({"attribute": "nope", "operator": "Equal", "value": 1}, ("attribute",), "no attribute"),
        (
            {"attribute": "a", "operator": "Equals", "value": 1},
            ("operator",),
            "did you mean 'Equal'",
        ),
        ({"attribute": "a", "operator": "Between", "value": 1}, ("value",), "[low, high]"),
        ({"attribute": "a", "operator": "In", "value": []}, ("value",), "non-empty list"),
        ({"attribute": "a", "operator": "Regexp", "value": "("}, ("value",), "regular expression"),
        ({"attribute": "a", "operator": "IsNull", "value": 1}, ("value",), "no value"),
        ({"attribute": "a", "operator": "Equal"}, ("value",), "needs a value"),
        ({"attribute": "a", "operator": "TimeWithinPast", "value": "soon"}, ("value",), "duration"),
        (
            {"attribute": "a", "operator": "Equal", "value": 1, "not": "yes"},
            ("not",),
            "true or false",
        ),
        ({"attribute": "a", "operator": "Equal", "value": 1, "extra": 1}, ("extra",), "unexpected"),
        ({"segment": "s9"}, ("segment",), "no segment"),
        ({"all": []}, ("all",), "non-empty"),
        ({"all": [{"segment": "s1"}, {"bogus": 1}]}, ("all", 1), "expected one of"),
        ({"type": "Xor", "conditions": [{"segment": "s1"}]}, ("type",), "And or Or"),
    ],
)
def test_errors_point_at_the_field(
    raw: dict[str, Any], path: tuple[Any, ...], fragment: str
) -> None:
    with pytest.raises(CriteriaError) as e:
        compile_criteria(raw, SCOPE)
    assert e.value.path == path
    assert fragment in e.value.message


def test_event_filters_cannot_read_the_profile() -> None:
    with pytest.raises(CriteriaError, match="event columns"):
        compile_criteria({"segment": "s1"}, Scope(profile=False, segments={"s1"}))
    with pytest.raises(CriteriaError, match="event columns"):
        compile_criteria(
            {"attribute": "a", "operator": "IsNull"}, Scope(profile=False, attributes={"a"})
        )


SAMPLES: list[Any] = [
    None,
    "",
    "p7",
    "x-p7-y",
    "/checkout/3",
    "/home",
    "7",
    "2.5",
    "abc",
    0,
    2,
    7,
    2.5,
    1e9,
    True,
    False,
    [],
    ["p7"],
    ["p1", "p7"],
    ["a", 7],
    [7],
    ["7"],
    [None, "p7"],
    [True],
    [2.5, "abc"],
]
EXPECTED: dict[str, list[Any]] = {
    "Equal": ["p7", 7, 2.5, "7", True],
    "Greater": [2, 2.5, "b", "7"],
    "GreaterEqual": [2, "abc"],
    "Less": [50, "m"],
    "LessEqual": [7],
    "Between": [[1, 10], ["a", "q"], [2.5, 1e9]],
    "Contain": ["p7", "7", 7, "abc"],
    "StartWith": ["/checkout", "p", ""],
    "EndWith": ["7", "3"],
    "In": [["p7", 7], ["abc"]],
    "NotIn": [["p7"]],
}


@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize("kind", ["column", "attribute"])
def test_fast_paths_agree_with_the_general_rules(kind: str, negate: bool) -> None:
    """The compiled leaves take shortcuts for common value types; whatever the value,
    they must give the verdict of the operator's general rule."""
    from tdedge.realtime.criteria import Leaf

    for operator, expectations in EXPECTED.items():
        for expected in expectations:
            raw = {kind: "a", "operator": operator, "value": expected, "not": negate}
            leaf = compile_criteria(raw, SCOPE)
            assert isinstance(leaf, Leaf)
            for actual in SAMPLES:
                ctx = Context({"a": actual}, {"a": actual}, set(), NOW)
                general = leaf.check(actual, leaf.expected, NOW) != negate
                assert leaf.test(ctx) is general, (operator, expected, actual, negate)
