"""Hostile request bodies through the real server: each is refused with a reason, fast,
without holding up other clients, and without losing what the same request carried
that was good."""

from __future__ import annotations

import gzip
import os
import threading
import time
from typing import Any

import httpx
import msgspec

from tests.e2e.conftest import Server

RECORDS_HOST = "us01.records.in.tdedge.test"
INGEST = "application/vnd.treasuredata.v1+json"
MOBILE = "application/vnd.treasuredata.v1.mobile+json"
# Far above what these requests take now, far below what they took before.
GENEROUS_S = 5.0
GZIP = {"Content-Encoding": "gzip"}


def ingest(
    server: Server, table: str, body: bytes, key: str | None, **headers: str
) -> httpx.Response:
    sent = {"Host": RECORDS_HOST, "Content-Type": MOBILE, **headers}
    if key is not None:
        sent["Authorization"] = f"TD1 {key}"
    return httpx.post(f"{server.url}/test_db/{table}", content=body, headers=sent, timeout=120)


def empty_members_bomb() -> bytes:
    """5 MiB of empty gzip members (20 bytes each): inflates to nothing, at great cost."""
    member = gzip.compress(b"")
    return member * ((5 * 1024 * 1024) // len(member))


def test_many_empty_gzip_members_are_refused_fast_and_hold_up_no_one(server: Server) -> None:
    bomb = empty_members_bomb()
    started = time.monotonic()
    r = ingest(server, "gz_hostile", bomb, server.write_key, **GZIP)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_gzip")
    assert "members" in r.json()["message"]
    assert time.monotonic() - started < GENEROUS_S
    # Without a key nothing is inflated at all.
    r = ingest(server, "gz_hostile", bomb, None, **GZIP)
    assert (r.status_code, r.json()["error"]) == (403, "missing_key")

    # A flood of them on one worker, and a normal client beside it.
    stop = threading.Event()
    statuses: list[int] = []

    def flood() -> None:
        while not stop.is_set():
            got = ingest(server, "gz_hostile", bomb, server.write_key, **GZIP)
            statuses.append(got.status_code)

    floods = [threading.Thread(target=flood) for _ in range(3)]
    for t in floods:
        t.start()
    try:
        slowest = 0.0
        for i in range(20):
            began = time.monotonic()
            r = server.postback("test_db", "beside_flood", {"i": i}, key=server.write_key)
            slowest = max(slowest, time.monotonic() - began)
            assert r.status_code == 200
    finally:
        stop.set()
        for t in floods:
            t.join()
    assert statuses and set(statuses) == {400}
    assert slowest < GENEROUS_S
    server.wait_for(
        "SELECT count(*) AS n FROM test_db.beside_flood", lambda rows: rows == [{"n": 20}]
    )


def test_multi_member_gzip_body_is_inflated_whole(server: Server) -> None:
    events: list[dict[str, Any]] = [{"m": i, "pad": os.urandom(32).hex()} for i in range(300)]
    text = msgspec.json.encode({"events": events})
    # Three members, cut anywhere: the concatenation is one gzip stream (RFC 1952).
    third = len(text) // 3
    parts = (text[:third], text[third : 2 * third], text[2 * third :])
    body = b"".join(gzip.compress(p) for p in parts)
    assert len(body) > 1024  # inflated off the event loop
    r = ingest(server, "gz_members", body, server.write_key, **GZIP)
    assert r.status_code == 200
    assert [x["success"] for x in r.json()["receipts"]] == [True] * 300
    rows = server.wait_for(
        "SELECT count(*) AS n, sum(m)::BIGINT AS s FROM test_db.gz_members",
        lambda rows: rows[0]["n"] == 300,
    )
    assert rows[0]["s"] == sum(range(300))
