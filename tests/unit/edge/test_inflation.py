"""gzip bodies: every member inflated, members and output capped, errors named."""

from __future__ import annotations

import gzip
import itertools
import os

import pytest

from tdedge.edge.http import HTTPError
from tdedge.edge.inflation import FEED_BYTES, gunzip, head

LIMIT = 5 * 1024 * 1024


def refusal(body: bytes, limit: int = LIMIT, members: int = 64) -> tuple[int, str, str]:
    with pytest.raises(HTTPError) as e:
        gunzip(body, limit, members)
    return e.value.status, e.value.code, e.value.message


def test_members_are_inflated_in_order_whatever_their_sizes() -> None:
    data = os.urandom(3 * FEED_BYTES + 17)
    cuts = [0, 1, 10, FEED_BYTES, 2 * FEED_BYTES + 5, len(data)]
    body = b"".join(gzip.compress(data[a:b]) for a, b in itertools.pairwise(cuts))
    assert gunzip(body, LIMIT, 64) == data


def test_zero_padding_after_the_last_member_is_ignored() -> None:
    assert gunzip(gzip.compress(b"abc") + bytes(100), LIMIT, 64) == b"abc"


def test_more_members_than_allowed_is_refused_with_the_reason() -> None:
    status, code, message = refusal(gzip.compress(b"") * 65, members=64)
    assert (status, code) == (400, "invalid_gzip")
    assert "64 members" in message
    assert gunzip(gzip.compress(b"x") * 64, LIMIT, 64) == b"x" * 64


def test_truncated_garbage_and_bombs() -> None:
    assert refusal(gzip.compress(b"abc")[:-3])[:2] == (400, "invalid_gzip")
    assert refusal(b"not gzip at all")[:2] == (400, "invalid_gzip")
    assert refusal(gzip.compress(b"abc") + b"trailing")[:2] == (400, "invalid_gzip")
    bomb = gzip.compress(bytes(64 * 1024 * 1024))
    assert refusal(bomb, limit=1024 * 1024)[:2] == (413, "body_too_large")
    assert len(gunzip(gzip.compress(b"y" * 1000), 1000, 1)) == 1000
    assert refusal(gzip.compress(b"y" * 1001), limit=1000)[:2] == (413, "body_too_large")


def test_head_inflates_only_what_is_kept() -> None:
    bomb = gzip.compress(b"z" * (64 * 1024 * 1024))
    assert head(bomb, 100) == b"z" * 100
    assert head(b"plain text", 5) == b"plain"
    assert head(gzip.compress(b"") * 3, 8) == (gzip.compress(b"") * 3)[:8]
