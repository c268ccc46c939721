"""Criteria: ``all``/``any``/``not`` over leaves on event columns, profile attributes
and batch segments, compiled once per configuration into small node objects.

Leaf forms (every leaf takes ``not: true`` to negate it)::

    {column: td_path, operator: StartWith, value: /checkout}      # the event
    {attribute: purchases_7d, operator: GreaterEqual, value: 1}    # the profile
    {segment: "1588214"}                                           # a batch segment

Treasure Data's JSON form ``{type: And|Or, conditions: [...]}`` is accepted too.
Evaluation is pure: the event, the attribute values, the segments and ``now_ms`` come in
through a Context; ``explain`` returns the same verdict with the reason for every node.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import msgspec

from tdedge.realtime import durations

OPERATORS = (
    "Equal",
    "NotEqual",
    "Greater",
    "GreaterEqual",
    "Less",
    "LessEqual",
    "Between",
    "In",
    "NotIn",
    "Contain",
    "StartWith",
    "EndWith",
    "Regexp",
    "IsNull",
    "TimeWithinPast",
)

Path = tuple[str | int, ...]


class CriteriaError(ValueError):
    """A criteria expression is malformed; ``path`` is relative to where it started."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class Scope(msgspec.Struct, frozen=True):
    """What an expression may refer to: event filters see only the event."""

    attributes: Collection[str] = ()
    segments: Collection[str] = ()
    profile: bool = True


class Context:
    """Everything one evaluation reads. ``values`` maps attribute references to values."""

    __slots__ = ("event", "now_ms", "segments", "values")

    def __init__(
        self,
        event: Mapping[str, Any],
        values: Mapping[str, Any],
        segments: Collection[str],
        now_ms: int,
    ) -> None:
        self.event = event
        self.values = values
        self.segments = segments
        self.now_ms = now_ms


class Trace(msgspec.Struct, omit_defaults=True):
    """Why a node passed or failed (``tdedge p13n explain``)."""

    passed: bool
    what: str
    actual: Any = None
    children: list[Trace] = []


Test = Callable[[Context], bool]


class Node:
    """A compiled condition. ``test`` is a closure built once per configuration: the
    request path calls it without attribute look-ups or per-call dispatch."""

    __slots__ = ("test",)
    test: Test

    def explain(self, ctx: Context) -> Trace:
        raise NotImplementedError


class All(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items
        tests = tuple(n.test for n in items)

        def test(ctx: Context) -> bool:
            for t in tests:  # noqa: SIM110 - all(genexpr) costs more per call
                if not t(ctx):
                    return False
            return True

        self.test = test

    def explain(self, ctx: Context) -> Trace:
        children = [n.explain(ctx) for n in self.items]
        return Trace(all(c.passed for c in children), "all of", children=children)


class Any_(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items
        tests = tuple(n.test for n in items)

        def test(ctx: Context) -> bool:
            for t in tests:  # noqa: SIM110 - any(genexpr) costs more per call
                if t(ctx):
                    return True
            return False

        self.test = test

    def explain(self, ctx: Context) -> Trace:
        children = [n.explain(ctx) for n in self.items]
        return Trace(any(c.passed for c in children), "any of", children=children)


class Not(Node):
    __slots__ = ("item",)

    def __init__(self, item: Node) -> None:
        self.item = item
        inner = item.test
        self.test = lambda ctx: not inner(ctx)

    def explain(self, ctx: Context) -> Trace:
        inner = self.item.explain(ctx)
        return Trace(not inner.passed, "not", children=[inner])


class InSegment(Node):
    __slots__ = ("negate", "segment")

    def __init__(self, segment: str, negate: bool) -> None:
        self.segment = segment
        self.negate = negate
        self.test = lambda ctx: (segment in ctx.segments) != negate

    def explain(self, ctx: Context) -> Trace:
        member = self.segment in ctx.segments
        what = f"{'not ' if self.negate else ''}in segment {self.segment}"
        return Trace(member != self.negate, what, actual="member" if member else "not a member")


Check = Callable[[Any, Any, int], bool]


class Leaf(Node):
    """``column`` (event) or ``attribute`` (profile) ``operator`` ``value``."""

    __slots__ = ("check", "expected", "kind", "name", "negate", "operator")

    def __init__(self, kind: str, name: str, operator: str, expected: Any, negate: bool) -> None:
        self.kind = kind
        self.name = name
        self.operator = operator
        self.expected = expected
        self.negate = negate
        self.check: Check = _CHECKS[operator]
        self.test = _leaf_test(kind == "column", name, operator, expected, negate, self.check)

    def actual(self, ctx: Context) -> Any:
        return (ctx.event if self.kind == "column" else ctx.values).get(self.name)

    def explain(self, ctx: Context) -> Trace:
        actual = self.actual(ctx)
        passed = self.check(actual, self.expected, ctx.now_ms) != self.negate
        shown = self.expected.pattern if isinstance(self.expected, re.Pattern) else self.expected
        value = "" if self.operator == "IsNull" else f" {shown!r}"
        what = f"{self.kind} {self.name} {'not ' if self.negate else ''}{self.operator}{value}"
        return Trace(passed, what, actual=actual)


_FAST_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equal": operator.eq,
    "Greater": operator.gt,
    "GreaterEqual": operator.ge,
    "Less": operator.lt,
    "LessEqual": operator.le,
}


def _leaf_test(
    on_event: bool, name: str, op: str, expected: Any, negate: bool, check: Check
) -> Test:
    """The leaf's closure; the common cases (a number against a number, a text equal to
    a text) skip the general rules, which give the same verdict for them."""
    fast = _FAST_ORDER.get(op)
    number = isinstance(expected, int | float) and not isinstance(expected, bool)
    if fast is not None and number:

        def numeric(ctx: Context) -> bool:
            v = (ctx.event if on_event else ctx.values).get(name)
            t = type(v)
            if t is int or t is float:
                return fast(v, expected) != negate
            return check(v, expected, ctx.now_ms) != negate

        return numeric
    if op == "Between" and all(
        isinstance(b, int | float) and not isinstance(b, bool) for b in expected
    ):
        low, high = expected

        def between(ctx: Context) -> bool:
            v = (ctx.event if on_event else ctx.values).get(name)
            t = type(v)
            if t is int or t is float:
                return bool(low <= v <= high) != negate
            return check(v, expected, ctx.now_ms) != negate

        return between
    if op == "Contain" and isinstance(expected, str):
        # A text that is not a number equals only the same text: membership decides.
        exact = _number(expected) is None

        def contain(ctx: Context) -> bool:
            v = (ctx.event if on_event else ctx.values).get(name)
            if type(v) is list:
                if expected in v:
                    return not negate
                if exact:
                    return negate
            return check(v, expected, ctx.now_ms) != negate

        return contain
    if op in ("StartWith", "EndWith") and isinstance(expected, str):
        starts = op == "StartWith"

        def affix(ctx: Context) -> bool:
            v = (ctx.event if on_event else ctx.values).get(name)
            if type(v) is str:
                return (v.startswith(expected) if starts else v.endswith(expected)) != negate
            return check(v, expected, ctx.now_ms) != negate

        return affix
    if op == "Equal" and isinstance(expected, str):

        def text(ctx: Context) -> bool:
            v = (ctx.event if on_event else ctx.values).get(name)
            if type(v) is str:
                return (v == expected) != negate
            return check(v, expected, ctx.now_ms) != negate

        return text

    def general(ctx: Context) -> bool:
        v = (ctx.event if on_event else ctx.values).get(name)
        return check(v, expected, ctx.now_ms) != negate

    return general


# Compilation.
def compile_criteria(raw: Any, scope: Scope, path: Path = ()) -> Node:
    if not isinstance(raw, dict):
        raise CriteriaError(path, "a condition must be a mapping (all/any/not or a leaf)")
    if "type" in raw and "conditions" in raw:
        return _td_form(raw, scope, path)
    groups = [k for k in ("all", "any") if k in raw]
    if groups:
        key = groups[0]
        _only(raw, {key, "not"}, path)
        items = raw[key]
        if not isinstance(items, list) or not items:
            raise CriteriaError((*path, key), f"{key} takes a non-empty list of conditions")
        nodes = [compile_criteria(item, scope, (*path, key, i)) for i, item in enumerate(items)]
        group: Node = All(nodes) if key == "all" else Any_(nodes)
        return Not(group) if _negate(raw, path) else group
    if set(raw) == {"not"} and isinstance(raw["not"], dict):
        return Not(compile_criteria(raw["not"], scope, (*path, "not")))
    if "segment" in raw:
        return _segment(raw, scope, path)
    if "column" in raw or "attribute" in raw:
        return _leaf(raw, scope, path)
    raise CriteriaError(
        path,
        "expected one of: all, any, not, column, attribute, segment (got "
        + ", ".join(map(str, raw))
        + ")",
    )


def _td_form(raw: dict[str, Any], scope: Scope, path: Path) -> Node:
    _only(raw, {"type", "conditions", "not"}, path)
    kind = raw["type"]
    if kind not in ("And", "Or"):
        raise CriteriaError((*path, "type"), "type must be And or Or")
    items = raw["conditions"]
    if not isinstance(items, list) or not items:
        raise CriteriaError((*path, "conditions"), "conditions takes a non-empty list")
    nodes = [
        compile_criteria(item, scope, (*path, "conditions", i)) for i, item in enumerate(items)
    ]
    group: Node = All(nodes) if kind == "And" else Any_(nodes)
    return Not(group) if _negate(raw, path) else group


def _segment(raw: dict[str, Any], scope: Scope, path: Path) -> Node:
    _only(raw, {"segment", "not"}, path)
    if not scope.profile:
        raise CriteriaError(path, "an event filter can only test event columns")
    segment = raw["segment"]
    if isinstance(segment, bool) or not isinstance(segment, str | int):
        raise CriteriaError((*path, "segment"), "segment takes a segment id")
    segment = str(segment)
    if segment not in scope.segments:
        raise CriteriaError(
            (*path, "segment"), f"no segment with id {segment!r}{_hint(segment, scope.segments)}"
        )
    return InSegment(segment, _negate(raw, path))


def _leaf(raw: dict[str, Any], scope: Scope, path: Path) -> Node:
    kind = "column" if "column" in raw else "attribute"
    _only(raw, {kind, "operator", "value", "not"}, path)
    name = raw[kind]
    if not isinstance(name, str) or not name:
        raise CriteriaError((*path, kind), f"{kind} takes a name")
    if kind == "attribute":
        if not scope.profile:
            raise CriteriaError(path, "an event filter can only test event columns")
        if name not in scope.attributes:
            raise CriteriaError(
                (*path, kind), f"no attribute {name!r}{_hint(name, scope.attributes)}"
            )
    operator = raw.get("operator")
    if operator not in OPERATORS:
        raise CriteriaError(
            (*path, "operator"),
            f"unknown operator {operator!r}{_hint(str(operator), OPERATORS)}; "
            f"one of {', '.join(OPERATORS)}",
        )
    expected = _expected(operator, raw, (*path, "value"))
    return Leaf(kind, name, operator, expected, _negate(raw, path))


def _expected(operator: str, raw: dict[str, Any], path: Path) -> Any:
    has = "value" in raw
    value = raw.get("value")
    if operator == "IsNull":
        if has:
            raise CriteriaError(path, "IsNull takes no value")
        return None
    if not has:
        raise CriteriaError(path, f"{operator} needs a value")
    if operator == "Between":
        if not (isinstance(value, list) and len(value) == 2 and all(map(_scalar, value))):
            raise CriteriaError(path, "Between takes [low, high]")
        return (value[0], value[1])
    if operator in ("In", "NotIn"):
        if not (isinstance(value, list) and value and all(map(_scalar, value))):
            raise CriteriaError(path, f"{operator} takes a non-empty list of values")
        return tuple(value)
    if operator == "Regexp":
        if not isinstance(value, str):
            raise CriteriaError(path, "Regexp takes a regular expression")
        try:
            return re.compile(value)
        except re.error as e:
            raise CriteriaError(path, f"invalid regular expression: {e}") from None
    if operator == "TimeWithinPast":
        try:
            return durations.parse_ms(value)
        except ValueError as e:
            raise CriteriaError(path, str(e)) from None
    if operator in ("StartWith", "EndWith") and not isinstance(value, str):
        raise CriteriaError(path, f"{operator} takes a string")
    if not _scalar(value):
        raise CriteriaError(path, f"{operator} takes one value (a string, number or boolean)")
    return value


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _negate(raw: dict[str, Any], path: Path) -> bool:
    negate = raw.get("not", False)
    if not isinstance(negate, bool):
        raise CriteriaError((*path, "not"), "not takes true or false here")
    return negate


def _only(raw: dict[str, Any], allowed: set[str], path: Path) -> None:
    extra = sorted(set(map(str, raw)) - allowed)
    if extra:
        raise CriteriaError(
            (*path, extra[0]),
            f"unexpected field {extra[0]!r} (allowed: {', '.join(sorted(allowed))})",
        )


def _hint(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Operators. Rules: a missing (null) value fails every operator but IsNull; a list value
# passes when any of its items passes (Contain: when an item equals the value); a number
# compared with a string that holds a number compares as numbers.
def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        try:
            n = float(x)
        except ValueError:
            return None
        return n if math.isfinite(n) else None
    return None


def _eq(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, int | float):
        n = _number(actual)
        return n is not None and n == expected
    if isinstance(actual, str):
        return bool(actual == expected)
    if isinstance(actual, int | float):
        return _number(expected) == actual
    return False


def _order(actual: Any, expected: Any) -> tuple[Any, Any] | None:
    """Comparable (actual, expected), or None when they do not compare."""
    both_text = isinstance(expected, str) and isinstance(actual, str)
    if both_text and (_number(expected) is None or _number(actual) is None):
        return actual, expected
    a, e = _number(actual), _number(expected)
    return None if a is None or e is None else (a, e)


def _each(check: Callable[[Any, Any], bool]) -> Check:
    def run(actual: Any, expected: Any, _now: int) -> bool:
        if actual is None:
            return False
        if isinstance(actual, list):
            return any(item is not None and check(item, expected) for item in actual)
        return check(actual, expected)

    return run


def _compare(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def run(actual: Any, expected: Any) -> bool:
        pair = _order(actual, expected)
        return pair is not None and test(*pair)

    return run


def _between(actual: Any, bounds: tuple[Any, Any]) -> bool:
    low, high = _order(actual, bounds[0]), _order(actual, bounds[1])
    return low is not None and high is not None and low[1] <= low[0] and high[0] <= high[1]


def _text(actual: Any) -> str | None:
    return actual if isinstance(actual, str) else None


def _contain(actual: Any, expected: Any, _now: int) -> bool:
    if actual is None:
        return False
    if isinstance(actual, list):
        return any(_eq(item, expected) for item in actual)
    if isinstance(actual, str):
        return str(expected) in actual
    return _eq(actual, expected)


def _is_null(actual: Any, _expected: Any, _now: int) -> bool:
    return actual is None or actual == [] or actual == ""


def _not_in(actual: Any, expected: tuple[Any, ...], _now: int) -> bool:
    if actual is None:
        return False
    items = actual if isinstance(actual, list) else [actual]
    return not any(_eq(item, e) for item in items for e in expected)


def time_ms(value: Any) -> int | None:
    """A time as milliseconds: unix seconds or milliseconds, or an ISO 8601 text."""
    n = _number(value) if not isinstance(value, str) else None
    if n is not None:
        return int(n if n > 100_000_000_000 else n * 1000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            n = _number(value)
            return None if n is None else int(n if n > 100_000_000_000 else n * 1000)
        if parsed.tzinfo is None:
            return None
        return int(parsed.timestamp() * 1000)
    return None


def _search(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None


def _within_past(actual: Any, window_ms: int, now_ms: int) -> bool:
    t = time_ms(actual)
    return t is not None and now_ms - window_ms <= t <= now_ms


_CHECKS: dict[str, Check] = {
    "Equal": _each(_eq),
    "NotEqual": lambda a, e, _now: a is not None and not _CHECKS["Equal"](a, e, _now),
    "Greater": _each(_compare(lambda a, e: a > e)),
    "GreaterEqual": _each(_compare(lambda a, e: a >= e)),
    "Less": _each(_compare(lambda a, e: a < e)),
    "LessEqual": _each(_compare(lambda a, e: a <= e)),
    "Between": _each(_between),
    "In": _each(lambda a, e: any(_eq(a, x) for x in e)),
    "NotIn": _not_in,
    "Contain": _contain,
    "StartWith": _each(lambda a, e: (t := _text(a)) is not None and t.startswith(e)),
    "EndWith": _each(lambda a, e: (t := _text(a)) is not None and t.endswith(e)),
    "Regexp": _each(lambda a, e: (t := _text(a)) is not None and _search(e, t)),
    "IsNull": _is_null,
    "TimeWithinPast": lambda a, e, now: (
        a is not None
        and (
            any(_within_past(x, e, now) for x in a)
            if isinstance(a, list)
            else _within_past(a, e, now)
        )
    ),
}
