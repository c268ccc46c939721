"""The records door through the real server: Postback v2, the Data Ingestion API, the
global id, the server-side cookie and CORS (spec/postback-api-v2.md, reference/clients.md)."""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from tests.e2e.conftest import Server, free_port, wait_healthy

# The records door is picked by host name on the main port.
RECORDS_HOST = "us01.records.in.tdedge.test"
V2_PATH = "/postback/v3/event/test_db/v2_tbl"
CAP = 1_048_064
INGEST = "application/vnd.treasuredata.v1+json"
INGEST_JS = "application/vnd.treasuredata.v1.js+json"
INGEST_MOBILE = "application/vnd.treasuredata.v1.mobile+json"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# tdedge's own id (_tdedge_id): version 7, the arrival time first (edge/ingest.py, uuids).
TDEDGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ORIGIN = "https://shop.tdedge.test"


def records(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Host": RECORDS_HOST, **kw.pop("headers", {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kw)


def td1(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"TD1 {key}", **more}


def ingest(
    server: Server, table: str, events: Any, content_type: str = INGEST, **kw: Any
) -> httpx.Response:
    headers = {"Content-Type": content_type, "Accept": content_type}
    headers.update(kw.pop("headers", {}))
    if "key" in kw:
        headers.update(td1(kw.pop("key")))
    body = kw.pop("content", None)
    if body is None:
        body = msgspec.json.encode({"events": events})
    return records(server, "POST", f"/test_db/{table}", content=body, headers=headers, **kw)


def set_cookie(response: httpx.Response, name: str) -> str:
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    assert len(found) == 1, response.headers
    return found[0]


# Postback API v2.
def test_documented_v2_example(server: Server) -> None:
    r = records(
        server,
        "POST",
        V2_PATH,
        content=b'{"email":"firstname.lastname@business.com","telephone":"555-555-5540"}',
        headers=td1(server.write_key, **{"Content-Type": "application/json"}),
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == "2"
    assert r.content == b"{}"
    rows = server.wait_for(
        "SELECT email, telephone, time FROM test_db.v2_tbl", lambda rows: len(rows) == 1
    )
    assert rows[0]["email"] == "firstname.lastname@business.com"
    assert abs(rows[0]["time"] - time.time()) < 60


def test_authorization_wins_over_x_td_write_key(server: Server) -> None:
    bad = "1/0000000000000000000000000000000000000000"
    ok1 = records(
        server, "POST", V2_PATH, json={"case": "x_header_only"},
        headers={"X-TD-Write-Key": server.write_key},
    )  # fmt: skip
    ok2 = records(
        server, "POST", V2_PATH, json={"case": "auth_good"},
        headers=td1(server.write_key, **{"X-TD-Write-Key": bad}),
    )  # fmt: skip
    ok3 = records(
        server, "POST", V2_PATH, json={"case": "auth_bad"},
        headers=td1(bad, **{"X-TD-Write-Key": server.write_key}),
    )  # fmt: skip
    assert [r.status_code for r in (ok1, ok2, ok3)] == [200, 200, 200]
    server.wait_for(
        'SELECT "case" FROM test_db.v2_tbl ORDER BY 1',
        lambda rows: rows == [{"case": "auth_good"}, {"case": "x_header_only"}],
    )
    errs = server.wait_errors(lambda e: any('"auth_bad"' in x["record"] for x in e))
    assert [(e["reason"], e["door"]) for e in errs] == [("unknown_key", "records")]


def test_key_in_url_is_refused_with_a_hint(server: Server) -> None:
    for headers in ({}, td1(server.write_key)):
        r = records(
            server,
            "POST",
            f"{V2_PATH}?td_write_key={server.write_key}",
            json={"via": "url"},
            headers=headers,
        )
        assert r.status_code == 403
        assert r.json()["error"] == "key_in_url"
        assert "Authorization: TD1" in r.json()["message"]
        assert "X-TD-Write-Key" in r.json()["message"]
    r = records(server, "POST", V2_PATH, json={"via": "nothing"})
    assert (r.status_code, r.json()["error"]) == (403, "missing_key")
    errs = server.wait_errors(lambda e: len(e) == 3)
    assert sorted(e["reason"] for e in errs) == ["key_in_url", "key_in_url", "missing_key"]
    # The same URL key on the legacy door is fine (it is the legacy contract).
    assert server.postback("test_db", "v2_tbl", {"via": "legacy"}, params={
        "td_write_key": server.write_key}).status_code == 200  # fmt: skip


def _sized(n: int) -> bytes:
    body = b'{"p":"' + b"x" * (n - 8) + b'"}'
    assert len(body) == n
    return body


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_body_cap_is_exactly_1048064_bytes(server: Server) -> None:
    headers = td1(server.write_key, **{"Content-Type": "application/json"})
    fits, over = _sized(CAP), _sized(CAP + 1)
    assert records(server, "POST", V2_PATH, content=fits, headers=headers).status_code == 200
    r = records(server, "POST", V2_PATH, content=over, headers=headers)
    assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
    # Chunked: no Content-Length, counted while it streams.
    r = records(server, "POST", V2_PATH, content=_chunks(fits), headers=headers)
    assert "content-length" not in r.request.headers
    assert r.status_code == 200
    r = records(server, "POST", V2_PATH, content=_chunks(over), headers=headers)
    assert r.status_code == 413
    # The cap is v2's own: the legacy door (--max-body-bytes, 1 MiB) takes that body.
    legacy = httpx.post(
        f"{server.url}{V2_PATH}",
        content=over,
        headers={"X-TD-Write-Key": server.write_key, "Content-Type": "application/json"},
    )
    assert legacy.status_code == 200
    rows = server.wait_for(
        "SELECT length(p) AS n FROM test_db.v2_tbl ORDER BY n", lambda rows: len(rows) == 3
    )
    assert [r["n"] for r in rows] == [CAP - 8, CAP - 8, CAP - 7]
    errs = server.wait_errors(lambda e: len(e) >= 2)
    assert [e["reason"] for e in errs] == ["body_too_large", "body_too_large"]


def test_records_port_serves_the_records_door(make_server: Any) -> None:
    port = free_port()
    srv: Server = make_server(["--records-port", str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    r = httpx.post(
        f"{url}/test_db/port_tbl",
        content=b'{"events":[{"via":"port"}]}',
        headers=td1(srv.write_key, **{"Content-Type": INGEST}),
    )
    assert r.json() == {"receipts": [{"success": True}]}
    # The main port without a records host name is the legacy door: no ingest route.
    r = httpx.post(f"{srv.url}/test_db/port_tbl", content=b'{"events":[{}]}')
    assert r.status_code == 404
    srv.wait_for("SELECT via FROM test_db.port_tbl", lambda rows: rows == [{"via": "port"}])


# Data Ingestion API.
def test_ingest_receipts_one_per_event_in_order(server: Server) -> None:
    events: list[Any] = [
        {"n": 1, "s": "a"},
        {"": "empty name"},
        {"n": 2, "nested": {"k": [1, 2]}, "td_uuid": "mine"},
        "not an object",
        {"_tdedge_id": "forged"},
        {"n": 3, "time": 1700000000},
    ]
    r = ingest(server, "ing_tbl", events, key=server.write_key)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    receipts = r.json()["receipts"]
    assert [x["success"] for x in receipts] == [True, False, True, False, False, True]
    assert all(type(x["success"]) is bool for x in receipts)
    assert [x["error"]["name"] for x in receipts if not x["success"]] == [
        "InvalidPropertyNameError",
        "InvalidPropertyValueError",
        "InvalidPropertyNameError",
    ]
    assert all(x["error"]["description"] for x in receipts if not x["success"])
    rows = server.wait_for(
        "SELECT n, s, nested, time, td_uuid, _tdedge_id FROM test_db.ing_tbl ORDER BY n",
        lambda rows: len(rows) == 3,
    )
    assert [(x["n"], x["s"], x["nested"], x["td_uuid"]) for x in rows] == [
        (1, "a", None, None),
        (2, None, '{"k":[1,2]}', "mine"),
        (3, None, None, None),
    ]
    assert rows[2]["time"] == 1700000000
    assert abs(rows[0]["time"] - time.time()) < 60
    assert all(TDEDGE_ID.fullmatch(x["_tdedge_id"]) for x in rows)
    assert len({x["_tdedge_id"] for x in rows}) == 3
    errs = server.wait_errors(lambda e: len(e) == 3)
    assert sorted(e["reason"] for e in errs) == [
        "invalid_property_name",
        "invalid_property_name",
        "not_an_object",
    ]
    assert {e["door"] for e in errs} == {"ingest"}
    # One request, one group commit: its events share one journal row.
    assert len({(e["journal_shard"], e["journal_seq"]) for e in errs}) == 1


def test_ingest_content_types_and_server_filled_columns(server: Server) -> None:
    r = ingest(server, "ct_tbl", [{"a": 1}], content_type="application/json", key=server.write_key)
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
    plain = ingest(server, "ct_tbl", [{"mode": "plain", "td_ip": "td_ip"}], key=server.write_key)
    mobile = ingest(
        server, "ct_tbl", [{"mode": "mobile"}], content_type=INGEST_MOBILE, key=server.write_key
    )
    gid = "0b8f3e1c-2f3a-4b5c-8d9e-0123456789ab"
    js = ingest(
        server,
        "ct_tbl",
        [{"mode": "js", "td_global_id": "td_global_id"}, {"mode": "js_own_ip", "td_ip": "0.0.0.0"}],
        content_type=INGEST_JS,
        key=server.write_key,
        headers={"Cookie": f"_tdedge_global_id={gid}"},
    )
    assert [x.status_code for x in (plain, mobile, js)] == [200, 200, 200]
    assert gid in set_cookie(js, "_tdedge_global_id")
    assert "set-cookie" not in plain.headers
    rows = server.wait_for(
        "SELECT mode, td_ip, td_global_id FROM test_db.ct_tbl ORDER BY mode",
        lambda rows: len(rows) == 4,
    )
    assert rows == [
        {"mode": "js", "td_ip": "127.0.0.1", "td_global_id": gid},
        {"mode": "js_own_ip", "td_ip": "0.0.0.0", "td_global_id": None},
        {"mode": "mobile", "td_ip": "127.0.0.1", "td_global_id": None},
        {"mode": "plain", "td_ip": "td_ip", "td_global_id": None},
    ]


def test_ingest_gzip_bodies(server: Server) -> None:
    body = msgspec.json.encode({"events": [{"z": i} for i in range(100)]})
    r = ingest(
        server,
        "gz_tbl",
        None,
        content_type=INGEST_MOBILE,
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip"},
        key=server.write_key,
    )
    assert r.status_code == 200
    assert len(r.json()["receipts"]) == 100
    # A zip bomb: 10 MiB of events in ~10 KiB; refused, not inflated.
    bomb_body = b'{"events":[{"p":"' + b"x" * (10 * 1024 * 1024) + b'"}]}'
    bomb = gzip.compress(bomb_body, compresslevel=9)
    assert len(bomb) < 64 * 1024
    r = ingest(
        server,
        "gz_tbl",
        None,
        content=bomb,
        headers={"Content-Encoding": "gzip"},
        key=server.write_key,
    )
    assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
    r = ingest(
        server,
        "gz_tbl",
        None,
        content=b"plain text, not gzip",
        headers={"Content-Encoding": "gzip"},
        key=server.write_key,
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_gzip")
    rows = server.wait_for(
        "SELECT count(*) AS n, sum(z)::BIGINT AS s FROM test_db.gz_tbl",
        lambda rows: rows[0]["n"] == 100,
    )
    assert rows[0]["s"] == sum(range(100))


def test_ingest_limits(server: Server) -> None:
    key = server.write_key
    r = ingest(server, "lim_tbl", [], key=key)
    assert (r.status_code, r.json()["error"]) == (400, "no_events")
    r = ingest(server, "lim_tbl", [{"i": i} for i in range(501)], key=key)
    assert (r.status_code, r.json()["error"]) == (400, "too_many_events")
    r = ingest(server, "lim_tbl", [{"i": i} for i in range(500)], key=key)
    assert r.status_code == 200 and len(r.json()["receipts"]) == 500
    r = ingest(server, "lim_tbl", None, content=b'{"nope":1}', key=key)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_body")
    # One event over 1 MiB fails alone; the others land.
    big = {"i": -1, "p": "x" * (1024 * 1024)}
    r = ingest(server, "lim_tbl", [{"i": 1000}, big, {"i": 1001}], key=key)
    assert r.status_code == 200
    receipts = r.json()["receipts"]
    assert [x["success"] for x in receipts] == [True, False, True]
    assert receipts[1]["error"]["name"] == "InvalidPropertyValueError"
    # Over 5 MiB in one request: 413, also chunked.
    five = [{"p": "x" * (900 * 1024)} for _ in range(6)]
    r = ingest(server, "lim_tbl", five, key=key)
    assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
    body = msgspec.json.encode({"events": five})
    r = ingest(server, "lim_tbl", None, content=_chunks(body), key=key)
    assert r.status_code == 413
    server.wait_for("SELECT count(*) AS n FROM test_db.lim_tbl", lambda rows: rows == [{"n": 502}])
    errs = server.wait_errors(lambda e: any(x["reason"] == "event_too_large" for x in e))
    assert "event_too_large" in {e["reason"] for e in errs}


def test_ingest_bad_names_and_keys(server: Server) -> None:
    r = records(
        server,
        "POST",
        "/bad-db/t",
        content=b'{"events":[{"a":1},{"a":2}]}',
        headers=td1(server.write_key, **{"Content-Type": INGEST}),
    )
    assert r.status_code == 200
    assert [x["error"]["name"] for x in r.json()["receipts"]] == [
        "InvalidCollectionNameError",
        "InvalidCollectionNameError",
    ]
    r = ingest(server, "k_tbl", [{"a": 1}])
    assert (r.status_code, r.json()["error"]) == (403, "missing_key")
    r = ingest(server, "k_tbl", [{"a": 1}], headers={"X-TD-Write-Key": server.write_key})
    assert r.status_code == 200
    r = ingest(server, "k_tbl", [{"a": 2}], key="1/not-a-key")
    assert r.status_code == 200  # checked after answering, as everywhere
    server.wait_for("SELECT a FROM test_db.k_tbl", lambda rows: rows == [{"a": 1}])
    errs = server.wait_errors(lambda e: len(e) == 4)
    assert sorted(e["reason"] for e in errs) == [
        "invalid_name",
        "invalid_name",
        "missing_key",
        "unknown_key",
    ]


# Global id and server-side cookie.
def test_global_id_is_kept_in_the_servers_cookie(server: Server) -> None:
    r = records(server, "GET", "/", headers=td1(server.write_key))
    assert r.status_code == 200
    global_id = r.json()["global_id"]
    assert UUID.fullmatch(global_id)
    assert r.headers["cache-control"] == "no-store"
    cookie = set_cookie(r, "_tdedge_global_id")
    assert cookie.startswith(f"_tdedge_global_id={global_id};")
    for attribute in ("SameSite=None", "Secure", "HttpOnly", "Path=/"):
        assert attribute in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert max_age >= 365 * 24 * 3600
    # The same browser (its cookie) keeps its id; another browser gets another.
    again = records(
        server, "GET", "/", headers=td1(server.write_key, Cookie=f"_tdedge_global_id={global_id}")
    )
    assert again.json() == {"global_id": global_id}
    assert set_cookie(again, "_tdedge_global_id").startswith(f"_tdedge_global_id={global_id};")
    other = records(server, "GET", "/", headers=td1(server.write_key))
    assert other.json()["global_id"] != global_id
    # A forged cookie value is not handed back.
    forged = records(
        server, "GET", "/", headers=td1(server.write_key, Cookie="_tdedge_global_id=<script>")
    )
    assert UUID.fullmatch(forged.json()["global_id"])
    assert records(server, "GET", "/").status_code == 403
    r = records(server, "GET", f"/?td_write_key={server.write_key}")
    assert (r.status_code, r.json()["error"]) == (403, "key_in_url")


def test_server_side_cookie_on_both_doors(server: Server) -> None:
    for host in ("ssc.shop.tdedge.test", "us01.records.in.shop.tdedge.test"):
        r = httpx.get(
            f"{server.url}/get_cookie_id?cookie_domain=shop.tdedge.test&r=1",
            headers={"Host": host, "Origin": ORIGIN},
        )
        assert r.status_code == 200, host
        ssc = r.json()["td_ssc_id"]
        assert UUID.fullmatch(ssc)
        cookie = set_cookie(r, "_td_ssc_id")
        assert cookie.startswith(f"_td_ssc_id={ssc};")
        assert "Domain=shop.tdedge.test" in cookie
        assert "HttpOnly" not in cookie  # td-js-sdk reads it
        assert r.headers["access-control-allow-origin"] == ORIGIN
        # td-js-sdk fetches it with credentials: without this the browser hides the answer.
        assert r.headers["access-control-allow-credentials"] == "true", host
        again = httpx.get(
            f"{server.url}/get_cookie_id?cookie_domain=shop.tdedge.test",
            headers={"Host": host, "Cookie": f"_td_ssc_id={ssc}"},
        )
        assert again.json() == {"td_ssc_id": ssc}
    for domain in ("other.test", "shop.tdedge.test%0d%0aSet-Cookie:x=1", ""):
        r = httpx.get(
            f"{server.url}/get_cookie_id?cookie_domain={domain}",
            headers={"Host": "ssc.shop.tdedge.test"},
        )
        assert (r.status_code, r.json()["error"]) == (400, "invalid_cookie_domain"), domain
        assert "set-cookie" not in r.headers


# CORS.
def test_cors_preflight_and_credentialed_answers(server: Server) -> None:
    pre = records(
        server,
        "OPTIONS",
        "/test_db/cors_tbl",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,accept,user-agent",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert pre.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "accept", "user-agent"} <= allowed
    assert "POST" in pre.headers["access-control-allow-methods"]
    r = ingest(server, "cors_tbl", [{"a": 1}], key=server.write_key, headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in r.headers["vary"]
    # Errors are readable by the page too.
    r = ingest(server, "cors_tbl", [], key=server.write_key, headers={"Origin": ORIGIN})
    assert r.status_code == 400
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_cors_allow_list(make_server: Any) -> None:
    srv: Server = make_server(["--cors-origin", ORIGIN])
    ok = records(
        srv, "OPTIONS", "/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert ok.status_code == 204
    evil = "https://evil.tdedge.test"
    pre = records(
        srv, "OPTIONS", "/", headers={"Origin": evil, "Access-Control-Request-Method": "GET"}
    )
    assert pre.status_code == 403
    assert "access-control-allow-origin" not in pre.headers
    r = records(srv, "GET", "/", headers=td1(srv.write_key, Origin=evil))
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_wrong_methods_on_write_routes(server: Server, method: str) -> None:
    r = records(server, method, "/test_db/t", headers=td1(server.write_key))
    assert r.status_code == 405
    r = records(server, method, V2_PATH, headers=td1(server.write_key))
    assert r.status_code == 405
