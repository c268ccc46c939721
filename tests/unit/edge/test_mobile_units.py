"""Pure pieces of the pre-1.0 mobile route: collection names, the Keen event's own keys,
the answer's shape."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tdedge.edge.http import HTTPError
from tdedge.edge.ingest import Failure
from tdedge.edge.mobile import (
    answer_body,
    check_media_type,
    collection,
    from_keen,
    keen_time,
    split_collections,
)

NOW = 1_750_000_000
STAMP = {"timestamp": "2021-04-22T10:00:00.123+0900"}  # td-android-sdk 0.6's format


def keen(event: dict[str, Any]) -> dict[str, Any]:
    out = from_keen(dict(event), NOW)
    assert isinstance(out, dict)
    return out


def test_collection_names() -> None:
    assert collection("My_DB.Events") == ("my_db", "events", True)
    assert collection("db.t.x") == ("db", "t.x", False)
    assert collection("no_dot") == ("no_dot", "", False)
    assert collection("a-b.c") == ("a-b", "c", False)
    assert collection("x" * 300 + ".t")[0] == "x" * 256


def test_keen_timestamps_both_sdks_write() -> None:
    assert keen_time(STAMP) == 1619053200
    assert keen_time({"timestamp": "2022-09-30T18:30:00+09:00"}) == 1664530200  # iOS 0.9
    assert keen_time({"timestamp": "2022-09-30T09:30:00"}) == 1664530200  # no offset: UTC
    for bad in ({"timestamp": "yesterday"}, {"timestamp": 1}, {}, "x", None):
        assert keen_time(bad) is None


def test_keen_keys_become_what_sdks_send_since_1_0() -> None:
    assert keen({"keen": STAMP, "#UUID": "U", "a": 1}) == {"time": 1619053200, "uuid": "U", "a": 1}
    # The event's own time and uuid win; what would be lost stays as sent.
    assert keen({"keen": STAMP, "time": 5, "#UUID": "U", "uuid": "mine"}) == {
        "time": 5,
        "#UUID": "U",
        "uuid": "mine",
    }
    more = {"timestamp": STAMP["timestamp"], "location": {"coordinates": [1, 2]}}
    assert keen({"keen": more}) == {"keen": more, "time": 1619053200}
    assert keen({"keen": {"timestamp": "bad"}}) == {"keen": {"timestamp": "bad"}}
    # Server-side upload time: as time, or in a column of the app's choosing.
    assert keen({"keen": STAMP, "#SSUT": True}) == {"time": NOW}
    assert keen({"keen": STAMP, "#SSUT": "up_at"}) == {"time": 1619053200, "up_at": NOW}
    assert keen({"#SSUT": False}) == {"#SSUT": False}
    failure = from_keen({"#SSUT": "_tdedge_id"}, NOW)
    assert isinstance(failure, Failure) and failure.name == "InvalidPropertyNameError"


def test_bodies_keep_their_keys_and_order() -> None:
    found = split_collections(b'{"b.t":[{"x":1}],"a.t":[{"y":2},{"z":3}],"c.t":[]}', 100)
    assert [(k, len(v)) for k, v in found.items] == [("b.t", 1), ("a.t", 2), ("c.t", 0)]
    assert found.count() == 3
    for body in (b"[]", b'{"a.t":{}}', b'{"a.t":[]}', b"{}", b"nope"):
        with pytest.raises(HTTPError) as e:
            split_collections(body, 100)
        assert e.value.status == 400
    answer = answer_body([("b.t", [b'{"success":true}']), ('we"ird', [])])
    assert msgspec.json.decode(answer) == {"b.t": [{"success": True}], 'we"ird': []}


def test_media_type() -> None:
    check_media_type("application/json")
    check_media_type("Application/JSON; charset=utf-8")
    for bad in (None, "", "text/plain", "application/vnd.treasuredata.v1+json"):
        with pytest.raises(HTTPError) as e:
            check_media_type(bad)
        assert e.value.status == 415
