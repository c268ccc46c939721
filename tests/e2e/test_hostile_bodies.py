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
        # From another address, as an attacker is: past its share of refusals it waits
        # its turn or gets 429, which the normal client beside it never does.
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=120) as client:
            while not stop.is_set():
                got = client.post(
                    f"{server.url}/test_db/gz_hostile",
                    content=bomb,
                    headers={
                        "Host": RECORDS_HOST,
                        "Content-Type": MOBILE,
                        "Authorization": f"TD1 {server.write_key}",
                        **GZIP,
                    },
                )
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
    assert 400 in statuses and set(statuses) <= {400, 429}
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


def nested(levels: int) -> bytes:
    """An object whose ``deep`` value brings it to ``levels`` levels in all."""
    return b'{"deep":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def test_deep_json_is_a_bad_record_on_both_postback_doors(server: Server) -> None:
    key = server.write_key
    doors: dict[str, dict[str, str]] = {
        "legacy": {"Content-Type": "application/json", "X-TD-Write-Key": key},
        "records": {"Host": RECORDS_HOST, "Authorization": f"TD1 {key}"},
    }

    def post(door: str, body: bytes) -> httpx.Response:
        url = f"{server.url}/postback/v3/event/test_db/deep_{door}"
        return httpx.post(url, content=body, headers=doors[door])

    for door in doors:
        # Past the decoder's own limit, and past tdedge's (100) but within the decoder's.
        for levels in (5000, 101):
            r = post(door, nested(levels))
            assert (r.status_code, r.json()["error"]) == (400, "too_deep"), (door, levels)
            assert "100 levels" in r.json()["message"]
        assert post(door, nested(100)).status_code == 200
    for door in doors:
        server.wait_for(
            f"SELECT count(*) AS n FROM test_db.deep_{door}", lambda rows: rows == [{"n": 1}]
        )
    errs = server.wait_errors(lambda e: sum(x["reason"] == "too_deep" for x in e) == 4)
    deep = [e for e in errs if e["reason"] == "too_deep"]
    assert sorted(e["door"] for e in deep) == ["legacy", "legacy", "records", "records"]
    assert all(e["record"].startswith('{"deep":[[[') for e in deep)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'tdedge_rejections_total{reason="too_deep"} 4.0' in metrics


def test_a_deep_event_fails_alone_and_the_others_are_stored(server: Server) -> None:
    for levels in (5000, 101):
        body = b'{"events":[{"i":1},' + nested(levels) + b',{"i":2}]}'
        r = ingest(server, f"deep_events_{levels}", body, server.write_key)
        assert r.status_code == 200
        receipts = r.json()["receipts"]
        assert [x["success"] for x in receipts] == [True, False, True]
        assert receipts[1]["error"] == {
            "name": "InvalidPropertyValueError",
            "description": "event nests deeper than 100 levels",
        }
        server.wait_for(
            f"SELECT i FROM test_db.deep_events_{levels} ORDER BY i",
            lambda rows: rows == [{"i": 1}, {"i": 2}],
        )
    errs = server.wait_errors(lambda e: sum(x["reason"] == "too_deep" for x in e) == 2)
    assert {e["door"] for e in errs if e["reason"] == "too_deep"} == {"ingest"}
    # A deep event in a gzip body, large enough to be split beside the event loop.
    filler = [msgspec.json.encode({"pad": os.urandom(64).hex()}) for _ in range(400)]
    text = b'{"events":[' + b",".join([*filler, nested(3000)]) + b"]}"
    r = ingest(server, "deep_gz", gzip.compress(text), server.write_key, **GZIP)
    assert r.status_code == 200
    assert [x["success"] for x in r.json()["receipts"]] == [True] * 400 + [False]


def test_a_deep_bulk_import_record_is_refused(server: Server) -> None:
    # msgpack: a map holding arrays 150 deep.
    record = b"\x82\xa4time\x01\xa4deep" + b"\x91" * 150 + b"\x01"
    r = httpx.put(
        f"{server.url}/v3/table/import/test_db/deep_import/msgpack.gz",
        content=gzip.compress(record),
        headers={"Host": "api.tdedge.test", "Authorization": f"TD1 {server.master_key}"},
    )
    assert (r.status_code, r.json()["error"]) == (400, "too_deep")


def journal_bytes(server: Server) -> int:
    return sum(f.stat().st_size for f in (server.data_dir / "journal").iterdir())


def test_refusals_cost_a_bounded_journal_and_are_all_counted(make_server: Any) -> None:
    # The throttle off: this counts what each refusal leaves, and all 2,000 must be read
    # (test_throttle.py shows how an address refused this much is paced).
    server: Server = make_server(
        ["--auth", "sync", "--refusal-summary-interval", "1", "--refusal-share", "0"]
    )
    url = f"{server.url}/postback/v3/event/test_db/made_up"
    # Within the budget a refusal keeps the start of its body: 64 KiB, 1 KiB for a key.
    big = b'{"pad":"' + b"x" * (200 * 1024) + b'"'  # no closing brace: not JSON
    r = httpx.post(url, content=big, headers={"X-TD-Write-Key": server.write_key})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_json")
    r = httpx.post(url, content=big + b"}", headers={"X-TD-Write-Key": "1/" + "0" * 40})
    assert (r.status_code, r.json()["error"]) == (403, "unknown_key")
    errs = server.wait_errors(lambda e: len(e) == 2)
    kept = {e["reason"]: len(e["record"]) for e in errs}
    assert kept == {"invalid_json": 64 * 1024, "unknown_key": 1024}

    # A flood of made-up keys, each with a 32 KiB body: 64 MiB sent.
    before = journal_bytes(server)
    body = msgspec.json.encode({"pad": "y" * (32 * 1024)})
    statuses: list[int] = []

    def send(n: int) -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(n):
                key = "1/" + os.urandom(20).hex()
                statuses.append(
                    client.post(url, content=body, headers={"X-TD-Write-Key": key}).status_code
                )

    threads = [threading.Thread(target=send, args=(250,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [403] * 2000
    grown = journal_bytes(server) - before
    assert grown < 8 * 1024 * 1024, grown  # far below the 64 MiB of bodies

    # None is lost from sight: rows of their own, or counted in a summary row.
    def accounted(errs: list[dict[str, Any]]) -> int:
        own = sum(1 for e in errs if e["reason"] == "unknown_key") - 1  # less the one above
        counted: list[int] = [
            msgspec.json.decode(e["record"])["refusals_not_kept"]
            for e in errs
            if e["reason"] == "refusals_not_kept"
        ]
        return own + sum(counted)

    errs = server.wait_errors(lambda e: accounted(e) == 2000)
    summaries = [e for e in errs if e["reason"] == "refusals_not_kept"]
    assert summaries and {msgspec.json.decode(e["record"])["source"] for e in summaries} == {
        "127.0.0.1"
    }
    assert sum(e["reason"] == "unknown_key" for e in errs) < 1000
    metrics = httpx.get(f"{server.url}/metrics").text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tdedge_refusals_total{") and 'reason="unknown_key"' in line
    ]
    assert sum(counted) == 2001


def test_made_up_keys_answered_200_cost_a_bounded_journal_by_default(make_server: Any) -> None:
    """With --auth async (the default) a refused key is answered 200, as Treasure Data
    does, but its records are kept as refusals, not journaled whole."""
    server: Server = make_server(["--refusal-summary-interval", "1", "--refusal-share", "0"])
    url = f"{server.url}/postback/v3/event/test_db/made_up_async"
    body = msgspec.json.encode({"pad": "z" * (64 * 1024)})
    before = journal_bytes(server)
    with httpx.Client(timeout=60) as client:
        statuses = [
            client.post(
                url, content=body, headers={"X-TD-Write-Key": f"1/{os.urandom(20).hex()}"}
            ).status_code
            for _ in range(300)
        ]
        good = client.post(url, content=body, headers={"X-TD-Write-Key": server.write_key})
    assert statuses == [200] * 300 and good.status_code == 200
    grown = journal_bytes(server) - before
    assert grown < 4 * 1024 * 1024, grown  # far below the 19 MiB of bodies

    def accounted(errs: list[dict[str, Any]]) -> int:
        own = sum(1 for e in errs if e["reason"] == "unknown_key")
        counted: int = sum(
            msgspec.json.decode(e["record"])["refusals_not_kept"]
            for e in errs
            if e["reason"] == "refusals_not_kept"
        )
        return own + counted

    errs = server.wait_errors(lambda e: accounted(e) == 300)
    kept = [e for e in errs if e["reason"] == "unknown_key"]
    assert kept and {len(e["record"]) for e in kept} == {1024}
    rows = server.wait_for(
        "SELECT length(pad) AS n FROM test_db.made_up_async", lambda rows: len(rows) == 1
    )
    assert rows == [{"n": 64 * 1024}]


def test_pixel_parameters_that_are_not_utf8_are_refused_not_replaced(server: Server) -> None:
    url = f"{server.url}/postback/v3/event/test_db/px_enc"
    key = server.write_key.replace("/", "%2F")
    good = httpx.get(f"{url}?td_format=pixel&td_write_key={key}&a=caf%C3%A9")
    bad = httpx.get(f"{url}?td_format=pixel&td_write_key={key}&a=caf%E9")
    form = httpx.post(
        f"{url}?td_format=pixel&td_write_key={key}",
        content=b"a=caf\xe9",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    # An image cannot show an error: the GIF, and the record in the import errors.
    assert [r.status_code for r in (good, bad, form)] == [200, 200, 200]
    assert {r.headers["content-type"] for r in (good, bad, form)} == {"image/gif"}
    server.wait_for("SELECT a FROM test_db.px_enc", lambda rows: rows == [{"a": "café"}])
    errs = server.wait_errors(lambda e: sum(x["reason"] == "invalid_encoding" for x in e) == 2)
    refused = [e for e in errs if e["reason"] == "invalid_encoding"]
    assert {e["door"] for e in refused} == {"pixel"}
    assert all(msgspec.json.decode(e["record"])["a"] == "caf\ufffd" for e in refused)


def test_strings_of_nuls_and_quotes_do_not_hold_up_loading(server: Server) -> None:
    """DuckLake commits NULs and single quotes kept in its catalog at a cost that grows
    faster than their count: a value of 128 KiB of either held every account's loading
    for seconds. Such rows load unchanged, and so do the others, promptly."""
    size = 128 * 1024  # 768 KiB of JSON as NULs: within the 1 MiB body limit
    nuls = server.postback("test_db", "nuls", {"a": "\u0000" * size}, key=server.write_key)
    # Refused later (a write key cannot create a database): its record, quotes and all,
    # is kept whole as an import error.
    quotes = server.postback("no_such_db", "quotes", {"a": "'" * size}, key=server.write_key)
    assert (nuls.status_code, quotes.status_code) == (200, 200)
    sent = time.monotonic()
    ok = server.postback("test_db", "other", {"b": 1}, key=server.write_key)
    assert ok.status_code == 200
    server.wait_for("SELECT b FROM test_db.other", lambda rows: rows == [{"b": 1}])
    assert time.monotonic() - sent < 2 * GENEROUS_S
    # Exactly as sent: nothing stripped or replaced.
    same = f"SELECT length(a) AS n, a = repeat(chr(0), {size}) AS same FROM test_db.nuls"
    assert server.query(same) == [{"n": size, "same": True}]
    errs = server.wait_errors(lambda e: any(x["table_name"] == "quotes" for x in e))
    (refused,) = [e for e in errs if e["table_name"] == "quotes"]
    assert refused["reason"] == "database_not_found"
    assert msgspec.json.decode(refused["record"]) == {"a": "'" * size}
