"""JSON depth without recursion, and how the doors' parsers use it."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tdedge.edge.body import record_from_body
from tdedge.edge.http import HTTPError
from tdedge.edge.ingest import DeepEvent, Failure, check_event, kept, split_events
from tdedge.edge.nesting import deep_values, deeper_than, depths


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize(
    "value",
    [
        1,
        "[[[{{{",
        {},
        {"a": [1, {"b": "]]]}}}"}]},
        ["\\", "\\\\", '\\"[', '"', "\\\\\\"],
        {'k"[': [[[]]], "\\": {"x": ['"{"']}},
    ],
)
def test_brackets_in_strings_do_not_count(value: Any) -> None:
    text = json.dumps(value).encode()
    assert int(depths(text).max(initial=0)) == depth_of(value)
    assert deeper_than(text, depth_of(value)) is False
    assert deeper_than(text, depth_of(value) - 1) is True


def test_text_that_is_not_json_gets_an_answer() -> None:
    for text in (b"", b"]]]", b'"', b"\\", b'\\"[', b"[[[", b"\xff\x00{"):
        depths(text)
        deep_values(text, 1, 0)


def test_deep_values_are_found_with_their_ends() -> None:
    text = b'{"a":[1],"b":[[[2]]],"c":[[["]]]]"]]]}'
    spans = deep_values(text, 2, 3)
    assert [text[a:b] for a, b in spans] == [b"[[[2]]]", b'[[["]]]]"]]]']
    assert deep_values(b"[[[[", 2, 3) == [(1, 4)]


def test_postback_bodies_past_the_limit_are_too_deep() -> None:
    assert record_from_body(b'{"a":' + b"[" * 9 + b"]" * 9 + b"}", None, 10)
    for levels in (11, 5000):
        body = b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"
        with pytest.raises(HTTPError) as e:
            record_from_body(body, "application/json", 10)
        assert (e.value.status, e.value.code) == (400, "too_deep")


def test_a_body_too_deep_to_decode_still_splits_into_events() -> None:
    deep = b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    body = b'{"events":[{"a":1},' + deep + b',"\\u00000",[' + b"[" * 20 + b"]" * 20 + b"]]}"
    events = split_events(body, 10)
    assert events.max_depth == 10
    checked = [check_event(e, events.max_depth) for e in events.items]
    assert checked[0] == {"a": 1}
    assert isinstance(events.items[1], DeepEvent)
    assert kept(events.items[1], 64).startswith(b'{"x":[[[[')
    reasons = [c.reason if isinstance(c, Failure) else None for c in checked]
    # A client's string that reads like a placeholder is still no object.
    assert reasons == [None, "too_deep", "not_an_object", "too_deep"]


def test_events_are_measured_only_when_the_body_could_be_too_deep() -> None:
    shallow = msgspec.json.encode({"events": [{"a": [[1]]} for _ in range(3)]})
    assert split_events(shallow, 100).max_depth is None
    many = msgspec.json.encode({"events": [{"a": [[1]]} for _ in range(50)]})
    events = split_events(many, 100)
    assert events.max_depth == 100
    assert all(isinstance(check_event(e, 100), dict) for e in events.items)
    over = msgspec.json.encode({"events": [{"a": [[1]]}]})
    (raw,) = split_events(over, 2).items
    failure = check_event(raw, 2)
    assert isinstance(failure, Failure) and failure.reason == "too_deep"
