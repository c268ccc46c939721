"""Pure pieces of the edge: body → record, credential extraction, key hashing."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tdedge import metrics
from tdedge.control.keys import claimed_account, hash_key, key_id, new_key
from tdedge.edge.auth import legacy_key
from tdedge.edge.body import record_from_body
from tdedge.edge.http import HTTPError
from tdedge.edge.memo import Memo
from tdedge.edge.services import Counters


def test_json_object_is_normalised() -> None:
    out = record_from_body(b' { "a" : 1,\n "b": "x" } ', "application/json", 100)
    assert msgspec.json.decode(out) == {"a": 1, "b": "x"}
    assert b"\n" not in out


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"\n", "empty_body"),
        (b"{", "invalid_json"),
        (b"[]", "not_an_object"),
        (b"null", "not_an_object"),
        (b"true", "not_an_object"),
    ],
)
def test_bad_bodies(body: bytes, code: str) -> None:
    with pytest.raises(HTTPError) as e:
        record_from_body(body, "application/json", 100)
    assert (e.value.status, e.value.code) == (400, code)


def test_form_body_is_strings_last_value_wins() -> None:
    out = record_from_body(
        b"a=1&a=2&b=x%20y&c=", "application/x-www-form-urlencoded; charset=utf-8", 100
    )
    assert msgspec.json.decode(out) == {"a": "2", "b": "x y", "c": ""}


def test_json_sent_as_form_by_curl_is_json() -> None:
    out = record_from_body(b'{"a":1}', "application/x-www-form-urlencoded", 100)
    assert msgspec.json.decode(out) == {"a": 1}


class H(dict[str, str]):
    pass


def test_header_key_wins_over_url_key() -> None:
    assert legacy_key(H({"x-td-write-key": "1/h"}), "td_write_key=1%2Fq") == "1/h"
    assert legacy_key(H(), "a=b&td_write_key=1%2Fq") == "1/q"
    assert legacy_key(H(), "a=b") is None
    assert legacy_key(H(), "td_write_key=") is None


def test_keys_are_hashed_and_ids_do_not_reveal_the_secret() -> None:
    key = new_key(7)
    assert claimed_account(key) == 7
    secret = key.split("/")[1]
    assert len(secret) == 40
    digest = hash_key(key)
    assert len(digest) == 32 and secret not in digest.hex()
    assert key_id(digest) == digest.hex()[:12]
    assert new_key(7) != key
    assert claimed_account("abc") is None and claimed_account("x/y") is None


def test_request_counts_reach_prometheus_once_per_loop_iteration() -> None:
    counters = Counters()
    labels = ("unit", "counted", 200)
    child = metrics.REQUESTS.labels("unit", "counted", "200")

    async def answer_three() -> tuple[float, float]:
        for _ in range(3):
            counters.inc(*labels)
        before = child._value.get()  # not yet: the flush runs after this iteration
        await asyncio.sleep(0)
        return before, child._value.get()

    start = child._value.get()
    before, after = asyncio.run(answer_three())
    assert (before - start, after - start) == (0, 3)


def test_key_hashes_are_hash_key_and_stay_bounded() -> None:
    hashes = Memo(hash_key)
    keys = [new_key(1) for _ in range(3)]
    assert [hashes(k) for k in keys] == [hash_key(k) for k in keys]
    hashes.max_size = 2
    assert hashes(new_key(2)) and len(hashes) <= 2


def test_a_memo_remembers_none_and_calls_once_per_argument() -> None:
    calls: list[str] = []

    def parse(raw: str) -> int | None:
        calls.append(raw)
        return None if raw == "bad" else len(raw)

    parsed = Memo(parse)
    assert [parsed(r) for r in ("bad", "abc", "bad", "abc")] == [None, 3, None, 3]
    assert calls == ["bad", "abc"]


def test_a_key_prefix_of_unicode_digits_claims_no_account() -> None:
    # "²".isdigit() is true but int("²") raises: such a key must not be a 500.
    from tdedge.control.keys import claimed_account

    assert claimed_account("²/secret") is None
    assert claimed_account("12/secret") == 12
