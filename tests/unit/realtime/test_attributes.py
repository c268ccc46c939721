"""Attributes with an injected clock: windows expire exactly when they should."""

from __future__ import annotations

from typing import Any

from tdedge.realtime.attributes import (
    MAX_VALUE_CHARS,
    CounterAttribute,
    ListAttribute,
    SingleAttribute,
)
from tdedge.realtime.criteria import Context, Scope, compile_criteria
from tdedge.realtime.profile import Profile, merge

T0 = 1_800_000_000_000  # a multiple of every bucket used here
S = 1000
H = 3_600_000
D = 24 * H


def fresh() -> Profile:
    return Profile(id=1, created_ms=T0)


def event_ctx(event: dict[str, Any], now: int) -> Context:
    return Context(event, {}, (), now)


def test_single_keeps_the_latest_value_and_expires() -> None:
    a = SingleAttribute("cat", "product_category", expire_ms=30 * 60 * S)
    p = fresh()
    a.update(p, {"product_category": "women"}, T0)
    a.update(p, {"other": 1}, T0 + 1)  # no value: nothing changes
    assert a.value(p, {}, T0 + 10 * S) == "women"
    a.update(p, {"product_category": "men"}, T0 + 60 * S)
    assert a.value(p, {}, T0 + 60 * S) == "men"
    assert a.sub(p, "time", {}, T0 + 60 * S) == T0 + 60 * S
    assert a.value(p, {}, T0 + 60 * S + 30 * 60 * S - 1) == "men"
    assert a.value(p, {}, T0 + 60 * S + 30 * 60 * S) is None
    a.tidy(p, T0 + 2 * H)
    assert "cat" not in p.singles


def test_single_cuts_long_texts_and_keeps_objects_as_json() -> None:
    a = SingleAttribute("x", "x")
    p = fresh()
    a.update(p, {"x": "é" * 1000}, T0)
    assert a.value(p, {}, T0) == "é" * MAX_VALUE_CHARS
    a.update(p, {"x": {"k": [1, 2]}}, T0)
    assert a.value(p, {}, T0) == '{"k":[1,2]}'


def test_list_is_recent_distinct_bounded() -> None:
    a = ListAttribute("recent", "product_name", max_items=3)
    p = fresh()
    for i, name in enumerate(["a", "b", "c", "a", "d"]):
        a.update(p, {"product_name": name}, T0 + i * S)
    assert a.value(p, {}, T0 + 10 * S) == ["d", "a", "c"]
    assert a.sub(p, "last", {}, T0) == "d"
    assert a.sub(p, "first", {}, T0) == "c"
    assert a.sub(p, "count", {}, T0) == 3
    a.update(p, {"product_name": ["x", "y"]}, T0 + 20 * S)  # arrays add every item
    assert a.value(p, {}, T0 + 20 * S) == ["y", "x", "d"]


def test_list_window_and_aggregates() -> None:
    a = ListAttribute("amounts", "amount", max_items=10, window_ms=H, distinct=False)
    p = fresh()
    a.update(p, {"amount": 5}, T0)
    a.update(p, {"amount": 5}, T0 + 10 * 60 * S)
    a.update(p, {"amount": 20}, T0 + 30 * 60 * S)
    now = T0 + 30 * 60 * S
    assert a.value(p, {}, now) == [20, 5, 5]
    assert (a.sub(p, "sum", {}, now), a.sub(p, "min", {}, now), a.sub(p, "max", {}, now)) == (
        30,
        5,
        20,
    )
    assert a.sub(p, "distinct_list", {}, now) == [20, 5]
    assert a.value(p, {}, T0 + H) == [20, 5]  # the first item left the window at T0 + 1h
    assert a.value(p, {}, T0 + 90 * 60 * S) == []


def test_sliding_counter_expires_with_the_injected_clock() -> None:
    """7-day window in 1-hour buckets: an increment counts for 7 days, rounded up to the
    end of its hour, and not a millisecond longer."""
    a = CounterAttribute("purchases_7d", window_ms=7 * D, bucket_ms=H)
    p = fresh()
    a.update(p, {}, T0 + 10 * 60 * S)  # in the bucket [T0, T0 + 1h)
    a.update(p, {}, T0 + 2 * D)
    assert a.value(p, {}, T0 + 2 * D) == 2
    assert a.value(p, {}, T0 + 7 * D + H - 1) == 2  # first bucket still inside
    assert a.value(p, {}, T0 + 7 * D + H) == 1  # first bucket out
    assert a.value(p, {}, T0 + 9 * D + H - 1) == 1
    assert a.value(p, {}, T0 + 9 * D + H) == 0
    # Updating later prunes the expired buckets from the stored state.
    a.update(p, {}, T0 + 20 * D)
    assert list(p.counters["purchases_7d"].buckets) == [T0 + 20 * D]
    assert a.value(p, {}, T0 + 20 * D) == 1


def test_counter_default_buckets_are_a_sixtieth_of_the_window() -> None:
    a = CounterAttribute("c", window_ms=60 * S)
    assert a.bucket_ms == S
    p = fresh()
    a.update(p, {}, T0)
    assert a.value(p, {}, T0 + 60 * S) == 1
    assert a.value(p, {}, T0 + 61 * S) == 0


def test_counter_total_by_column_ignores_non_numbers() -> None:
    a = CounterAttribute("spend", increment_column="amount")
    p = fresh()
    for amount in (10, "2.5", "abc", None, True):
        a.update(p, {"amount": amount}, T0)
    assert a.value(p, {}, T0 + 100 * D) == 12.5


def test_filter_decides_which_events_count() -> None:
    flt = compile_criteria(
        {"column": "td_path", "operator": "StartWith", "value": "/checkout"}, Scope(profile=False)
    )
    a = CounterAttribute("checkouts", filter=flt, tables=frozenset({"pageviews"}))
    assert a.applies("pageviews", event_ctx({"td_path": "/checkout/1"}, T0))
    assert not a.applies("pageviews", event_ctx({"td_path": "/cart"}, T0))
    assert not a.applies("purchases", event_ctx({"td_path": "/checkout/1"}, T0))


def test_merge_keeps_newest_singles_and_adds_counters() -> None:
    single = SingleAttribute("cat", "cat")
    counter = CounterAttribute("n", window_ms=D, bucket_ms=H)
    recent = ListAttribute("recent", "p", max_items=3)
    older, newer = fresh(), Profile(id=2, created_ms=T0 + 5)
    older.keys, newer.keys = ["td_client_id=a"], ["email=e"]
    single.update(older, {"cat": "old"}, T0)
    single.update(newer, {"cat": "new"}, T0 + 1)
    for p, t in ((older, T0), (newer, T0 + 1), (newer, T0 + 2)):
        counter.update(p, {}, t)
    recent.update(older, {"p": "x"}, T0)
    recent.update(newer, {"p": "y"}, T0 + 1)
    recent.update(newer, {"p": "x"}, T0 + 2)
    merge(older, newer)
    for a in (single, counter, recent):
        a.tidy(older, T0 + 3)
    assert older.keys == ["td_client_id=a", "email=e"]
    assert single.value(older, {}, T0 + 3) == "new"
    assert counter.value(older, {}, T0 + 3) == 3
    assert recent.value(older, {}, T0 + 3) == ["x", "y"]
    assert older.created_ms == T0


def test_the_request_path_updaters_do_what_update_does() -> None:
    """``updater()`` and ``reader()`` are ``update`` and ``value`` with short paths for
    common values: over a mix of events they leave identical profiles and read the same."""
    import random

    from tdedge.realtime.profile import encode_json

    values: list[Any] = ["a", "b", "x" * (MAX_VALUE_CHARS + 9), 1, 1.0, True, 2, None]
    values += [["a", 1], {"k": "v"}, [], [True, "b"]]
    kinds = [
        SingleAttribute("s", "c"),
        ListAttribute("l", "c", max_items=3),
        ListAttribute("lw", "c", max_items=5, window_ms=10 * S),
        ListAttribute("ld", "c", max_items=4, distinct=False),
        CounterAttribute("n"),
        CounterAttribute("w", window_ms=60 * S, bucket_ms=7 * S, increment_column="c"),
    ]
    rnd = random.Random(3)
    slow, fast = fresh(), fresh()
    updaters = [a.updater() for a in kinds]
    for i in range(400):
        event = {"c": rnd.choice(values)} if i % 7 else {}
        now = T0 + i * 700
        for a, update in zip(kinds, updaters, strict=True):
            a.update(slow, event, now)
            update(fast, event, now)
        assert encode_json(fast) == encode_json(slow), (i, event)
        for a in kinds:
            assert a.reader()(fast, {}, now) == a.value(slow, {}, now), (i, a.name)
