"""Pure pieces of the records door and the pixel: keys, ingest parsing, gzip, cookies,
CORS, client addresses, redirects."""

from __future__ import annotations

import gzip
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest

from tdedge.edge.auth import records_key, url_key
from tdedge.edge.cookies import (
    GLOBAL_ID_COOKIE,
    cookie_value,
    global_id_cookie,
    host_name,
    ssc_domain,
)
from tdedge.edge.cors import CDP, P13N, RECORDS, Cors, Policy
from tdedge.edge.http import HTTPError
from tdedge.edge.inflation import gunzip
from tdedge.edge.ingest import (
    MAX_EVENT_BYTES,
    MAX_EVENTS,
    Failure,
    Fill,
    Mode,
    check_event,
    collection_names,
    dedup_id,
    fill,
    media_mode,
    receipt,
    receipts_body,
    split_events,
    uuids,
)
from tdedge.edge.peers import TrustedProxies, peer_host
from tdedge.edge.pixel import GIF, parse_params, pixel_record, query_params
from tdedge.edge.records import ingest_route
from tdedge.edge.redirect import RedirectPolicy, substitute

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# Keys on the records door.
@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "TD1 1/abc"}, "1/abc"),
        ({"authorization": "td1   1/abc  "}, "1/abc"),
        ({"x-td-write-key": "1/xyz"}, "1/xyz"),
        ({"authorization": "TD1 1/abc", "x-td-write-key": "1/xyz"}, "1/abc"),
        ({"authorization": "Bearer t", "x-td-write-key": "1/xyz"}, "1/xyz"),
        ({"authorization": "TD1 "}, None),
        ({}, None),
    ],
)
def test_records_key_authorization_wins(headers: dict[str, str], key: str | None) -> None:
    assert records_key(headers) == key


def test_url_key_is_seen_even_empty() -> None:
    assert url_key("a=1&td_write_key=1%2Fk") == "1/k"
    assert url_key("td_write_key=") == ""
    assert url_key("a=td_write_key") is None


@pytest.mark.parametrize(
    ("path", "is_ingest"),
    [("/db/t", True), ("/db/t/", False), ("/db", False), ("//t", False), ("/a/b/c", False)],
)
def test_ingest_route(path: str, is_ingest: bool) -> None:
    assert ingest_route(path) is is_ingest


# Data Ingestion API.
def test_media_types() -> None:
    assert media_mode("application/vnd.treasuredata.v1+json") is Mode.PLAIN
    assert media_mode("application/vnd.treasuredata.v1.js+json; charset=utf-8") is Mode.JS
    assert media_mode("Application/VND.treasuredata.v1.mobile+json") is Mode.MOBILE
    for bad in (None, "application/json", "text/plain"):
        with pytest.raises(HTTPError) as e:
            media_mode(bad)
        assert e.value.status == 415


def test_events_count_limits() -> None:
    one = b'{"events":[{"a":1}]}'
    assert [bytes(r) for r in raws(one)] == [b'{"a":1}']
    spaced = raws(b'{ "events" : [ {"a" : 1 } ,\n"x", {} ] }')
    assert [bytes(r) for r in spaced] == [b'{"a" : 1 }', b'"x"', b"{}"]
    most = msgspec.json.encode({"events": [{"i": i} for i in range(MAX_EVENTS)]})
    assert len(raws(most)) == MAX_EVENTS
    too_many = msgspec.json.encode({"events": [{"i": i} for i in range(MAX_EVENTS + 1)]})
    for body, code in [
        (too_many, "too_many_events"),
        (b'{"events":[]}', "no_events"),
        (b'{"event":[{}]}', "invalid_body"),
        (b"[{}]", "invalid_body"),
        (b"not json", "invalid_body"),
    ]:
        with pytest.raises(HTTPError) as e:
            split_events(body, 100)
        assert (e.value.status, e.value.code) == (400, code)


def raws(body: bytes) -> list[msgspec.Raw]:
    found = split_events(body, 100).items
    assert all(isinstance(r, msgspec.Raw) for r in found)
    return [r for r in found if isinstance(r, msgspec.Raw)]


def _raw(obj: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(obj))


def test_event_checks_use_the_names_the_sdks_know() -> None:
    assert check_event(_raw({"a": 1, "b": [1]})) == {"a": 1, "b": [1]}
    cases = [
        ({"": 1}, "InvalidPropertyNameError", "invalid_property_name"),
        ({"a\nb": 1}, "InvalidPropertyNameError", "invalid_property_name"),
        ({"x" * 256: 1}, "InvalidPropertyNameError", "invalid_property_name"),
        ({"_tdedge_id": "forged"}, "InvalidPropertyNameError", "invalid_property_name"),
        ({"_TDEDGE_x": 1}, "InvalidPropertyNameError", "invalid_property_name"),
        ({"td_type_conflicts": "{}"}, "InvalidPropertyNameError", "invalid_property_name"),
        ("a string", "InvalidPropertyValueError", "not_an_object"),
        ([1, 2], "InvalidPropertyValueError", "not_an_object"),
    ]
    for event, name, reason in cases:
        failure = check_event(_raw(event))
        assert isinstance(failure, Failure), event
        assert (failure.name, failure.reason) == (name, reason)
    assert check_event(_raw({"x" * 255: 1})) == {"x" * 255: 1}
    # The SDKs' own columns are the clients' data, stored as sent.
    sdk = {"td_uuid": "d", "uuid": "u", "record_uuid": "r", "tdedge_id": 1, "_td_x": 2}
    assert check_event(_raw(sdk)) == sdk
    # Names learnt as good stay good; bad ones are refused every time.
    for _ in range(2):
        assert check_event(_raw({"ok": 1, "OK2": 2})) == {"ok": 1, "OK2": 2}
        assert isinstance(check_event(_raw({"ok": 1, "": 2})), Failure)


def test_dedup_id_is_a_short_string_or_nothing() -> None:
    assert dedup_id({"record_uuid": "A-1"}, "record_uuid") == "A-1"
    assert dedup_id({"mine": "m"}, "mine") == "m"
    for value in ("", "x" * 256, 12, None, ["a"], {"a": 1}):
        assert dedup_id({"record_uuid": value}, "record_uuid") == ""
    assert dedup_id({"RECORD_UUID": "r"}, "record_uuid") == ""
    assert dedup_id({"record_uuid": "x" * 255}, "record_uuid") == "x" * 255


def test_event_size_limit_is_inclusive() -> None:
    def sized(n: int) -> msgspec.Raw:
        raw = msgspec.json.encode({"p": "x" * (n - 8)})
        assert len(raw) == n
        return msgspec.Raw(raw)

    assert isinstance(check_event(sized(MAX_EVENT_BYTES)), dict)
    failure = check_event(sized(MAX_EVENT_BYTES + 1))
    assert isinstance(failure, Failure) and failure.name == "InvalidPropertyValueError"


def test_fill_adds_ip_and_global_id_but_keeps_real_values() -> None:
    def filled(event: dict[str, Any], extra: Fill) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.json.decode(fill(event, extra))
        return out

    assert filled({"a": 1, "td_uuid": "d"}, Fill()) == {"a": 1, "td_uuid": "d"}
    assert filled({"td_ip": "td_ip"}, Fill(ip="10.0.0.1"))["td_ip"] == "10.0.0.1"
    assert filled({}, Fill(ip="10.0.0.1"))["td_ip"] == "10.0.0.1"
    assert filled({"td_ip": "0.0.0.0"}, Fill(ip="10.0.0.1"))["td_ip"] == "0.0.0.0"
    out = filled({"td_global_id": "td_global_id"}, Fill(ip="1.1.1.1", global_id="g"))
    assert out["td_global_id"] == "g"
    assert filled({"td_global_id": "own"}, Fill(global_id="g"))["td_global_id"] == "own"
    # Without a global id to give (v1+json, mobile), the placeholder stays as sent.
    assert filled({"td_global_id": "td_global_id"}, Fill())["td_global_id"] == "td_global_id"


def test_receipts_are_json_with_boolean_success() -> None:
    body = receipts_body(
        [b'{"success":true}', receipt(Failure("InvalidPropertyNameError", "d", "r"))]
    )
    assert msgspec.json.decode(body) == {
        "receipts": [
            {"success": True},
            {"success": False, "error": {"name": "InvalidPropertyNameError", "description": "d"}},
        ]
    }


def test_uuids_are_version_7_distinct_and_carry_the_arrival_time() -> None:
    now_ms = 1_800_000_000_123
    ids = uuids(500, now_ms)
    assert all(UUID.fullmatch(u) for u in ids)
    assert len(set(ids)) == 500
    assert {uuid.UUID(u).version for u in ids} == {7}
    assert {int(u[:8] + u[9:13], 16) for u in ids} == {now_ms}
    # The version and variant bits are forced whatever the random bytes are; the last
    # three digits count on from a random start that leaves room for all n.
    ones = uuids(2, now_ms, lambda n: b"\xff" * n)
    assert ones == ["01a3185c-507b-7fff-bfff-fffffffff000", "01a3185c-507b-7fff-bfff-fffffffff001"]
    assert uuids(1, 0, lambda n: b"\x00" * n) == ["00000000-0000-7000-8000-000000000000"]
    assert len(set(uuids(4096, now_ms))) == 4096
    with pytest.raises(ValueError):
        uuids(4097, now_ms)
    # Requests in other milliseconds, or with other random bits, do not collide.
    assert not set(ids) & set(uuids(500, now_ms + 1)) and not set(ids) & set(uuids(500, now_ms))


def test_collection_names() -> None:
    assert collection_names("/My_DB/Tbl") == ("my_db", "tbl", True)
    assert collection_names("/my-db/t") == ("my-db", "t", False)


# gzip: bounded inflation.
def test_gunzip_round_trip_and_multi_member() -> None:
    assert gunzip(gzip.compress(b"hello"), 100, 64) == b"hello"
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 100, 64) == b"abcd"


def test_gunzip_limit_is_exact() -> None:
    data = b"x" * 10_000
    assert gunzip(gzip.compress(data), 10_000, 64) == data
    with pytest.raises(HTTPError) as e:
        gunzip(gzip.compress(data), 9_999, 64)
    assert e.value.status == 413


def test_gunzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 300_000
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(HTTPError) as e:
            gunzip(bomb, 5 * 1024 * 1024, 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.status == 413
    assert peak < 16 * 1024 * 1024  # the limit plus a step or two, not 200 MiB


@pytest.mark.parametrize("body", [b"not gzip", gzip.compress(b"abcdef")[:-6]])
def test_gunzip_garbage_is_400(body: bytes) -> None:
    with pytest.raises(HTTPError) as e:
        gunzip(body, 100, 64)
    assert (e.value.status, e.value.code) == (400, "invalid_gzip")


# Cookies.
def test_cookie_value_takes_only_well_formed_ids_from_every_cookie_header() -> None:
    good = "0b8f3e1c-2f3a-4b5c-8d9e-0123456789ab"
    headers = [("cookie", "a=1; other=2"), ("cookie", f"{GLOBAL_ID_COOKIE}={good}")]
    assert cookie_value(headers, GLOBAL_ID_COOKIE) == good
    bad = [("cookie", f"{GLOBAL_ID_COOKIE}=x\r\nSet-Cookie: evil=1")]
    assert cookie_value(bad, GLOBAL_ID_COOKIE) is None
    assert cookie_value([("cookie", f"x{GLOBAL_ID_COOKIE}={good}")], GLOBAL_ID_COOKIE) is None


def test_global_id_cookie_attributes() -> None:
    name, value = global_id_cookie("id", None)
    assert name == "set-cookie"
    assert value.startswith(f"{GLOBAL_ID_COOKIE}=id;")
    for attribute in ("Secure", "HttpOnly", "SameSite=None", "Path=/", "Max-Age=34560000"):
        assert attribute in value
    assert "Domain" not in value
    assert "Domain=example.com" in global_id_cookie("id", "example.com")[1]


def test_ssc_domain_must_contain_the_host() -> None:
    assert ssc_domain("example.com", "ssc.example.com:443") == "example.com"
    assert ssc_domain(".Example.COM", "ssc.example.com") == "example.com"
    assert ssc_domain("ssc.example.com", "ssc.example.com") == "ssc.example.com"
    for raw, host in [
        ("other.com", "ssc.example.com"),
        ("ample.com", "ssc.example.com"),
        ("example.com; Secure", "ssc.example.com"),
        ("example.com\r\nX: y", "ssc.example.com"),
        ("", "ssc.example.com"),
        (None, "ssc.example.com"),
    ]:
        with pytest.raises(HTTPError) as e:
            ssc_domain(raw, host)
        assert (e.value.status, e.value.code) == (400, "invalid_cookie_domain"), raw


def test_host_name() -> None:
    assert host_name("Example.com:8443") == "example.com"
    assert host_name("[::1]:80") == "[::1]"
    assert host_name("example.com") == "example.com"


# CORS.
def test_cors_echoes_allowed_origin_with_credentials() -> None:
    any_origin = Cors(None)
    headers = dict(any_origin.headers("https://shop.example"))
    assert headers["access-control-allow-origin"] == "https://shop.example"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["vary"] == "Origin"
    assert any_origin.headers(None) == [("vary", "Origin")]
    status, pre, _ = any_origin.preflight("https://shop.example")
    pre_headers = dict(pre)
    assert status == 204
    for name in ("Authorization", "Content-Type", "Accept", "User-Agent"):
        assert name in pre_headers["access-control-allow-headers"]
    assert "POST" in pre_headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("policy", "method", "sent"),
    [
        # What td-js-sdk 4.4.3 sends: records and the global id, fetchPersonalization,
        # fetchUserSegments (lib/record.js, plugins/globalid.js, plugins/personalization.js).
        (RECORDS, "POST", ["Authorization", "User-Agent", "Content-Type", "Accept"]),
        (RECORDS, "GET", ["Authorization", "User-Agent", "Content-Type", "Accept"]),
        (P13N, "POST", ["Content-Type", "Authorization", "WP13n-Token"]),
        (CDP, "GET", ["Content-Type"]),
    ],
)
def test_each_door_preflight_allows_what_the_sdk_sends_with_credentials(
    policy: Policy, method: str, sent: list[str]
) -> None:
    status, headers, _ = Cors(None, policy).preflight("https://shop.example")
    allowed = dict(headers)
    assert status == 204
    assert allowed["access-control-allow-origin"] == "https://shop.example"
    assert allowed["access-control-allow-credentials"] == "true"
    assert allowed["vary"] == "Origin"
    assert method in allowed["access-control-allow-methods"]
    names = {h.strip().lower() for h in allowed["access-control-allow-headers"].split(",")}
    assert {h.lower() for h in sent} <= names


def test_cors_allow_list() -> None:
    cors = Cors(("https://a.example",))
    assert cors.allowed("https://a.example")
    assert not cors.allowed("https://b.example")
    assert cors.headers("https://b.example") == [("vary", "Origin")]
    assert cors.preflight("https://b.example")[0] == 403
    assert cors.preflight(None)[0] == 403
    assert Cors(("*",)).allowed("https://anything")


# Client addresses.
def test_peer_host_forms() -> None:
    assert peer_host("1.2.3.4:5678") == "1.2.3.4"
    assert peer_host("[::1]:5678") == "::1"
    assert peer_host("::1") == "::1"


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    none = TrustedProxies(())
    assert none.client_ip("10.0.0.5:1", ["6.6.6.6"]) == "10.0.0.5"
    proxies = TrustedProxies(("10.0.0.0/8", "192.168.1.1"))
    assert proxies.client_ip("8.8.8.8:1", ["6.6.6.6"]) == "8.8.8.8"  # peer not trusted
    assert proxies.client_ip("10.0.0.5:1", ["203.0.113.7"]) == "203.0.113.7"
    # The client forged a first hop; the rightmost untrusted address is the real one.
    assert proxies.client_ip("10.0.0.5:1", ["1.1.1.1, 203.0.113.7, 192.168.1.1"]) == ("203.0.113.7")
    # Split over two headers, as some proxies send it.
    assert proxies.client_ip("10.0.0.5:1", ["1.1.1.1", "203.0.113.7"]) == "203.0.113.7"
    # Garbage: stop at the last address a trusted hop vouched for.
    assert proxies.client_ip("10.0.0.5:1", ["203.0.113.7, nonsense"]) == "10.0.0.5"
    assert proxies.client_ip("10.0.0.5:1", []) == "10.0.0.5"


# Redirects.
def test_redirect_allow_list() -> None:
    policy = RedirectPolicy(("shop.example", "*.cdn.example"))
    policy.check("https://shop.example/landing?x=1")
    policy.check("http://SHOP.example:8080/")
    policy.check("https://img.cdn.example/a")
    for url, code in [
        ("https://cdn.example/", "redirect_not_allowed"),
        ("https://evil.example/", "redirect_not_allowed"),
        ("https://shop.example.evil.example/", "redirect_not_allowed"),
        ("https://shop.example@evil.example/", "redirect_not_allowed"),
        ("https://evil.example\\@shop.example/", "invalid_redirect"),
        ("https://shop.example/\r\nSet-Cookie: a=b", "invalid_redirect"),
        ("https://shop.example/ a", "invalid_redirect"),
        ("javascript:alert(1)//shop.example", "invalid_redirect"),
        ("//shop.example/", "invalid_redirect"),
        ("/relative", "invalid_redirect"),
        ("https://shop.example/\u00e9", "invalid_redirect"),
    ]:
        with pytest.raises(HTTPError) as e:
            policy.check(url)
        assert (e.value.status, e.value.code) == (400, code), url
    with pytest.raises(HTTPError):
        RedirectPolicy(()).check("https://shop.example/")


def test_redirect_placeholder_is_replaced_only_as_a_parameter_value() -> None:
    url = "https://shop.example/p?uid=td_global_id&td_global_id=td_global_id&x=td_global_idx#td_global_id"
    assert substitute(url, "G") == (
        "https://shop.example/p?uid=G&td_global_id=G&x=td_global_idx#td_global_id"
    )
    assert substitute("https://shop.example/td_global_id", "G") == (
        "https://shop.example/td_global_id"
    )


# Pixel.
def test_gif_is_the_43_byte_transparent_gif() -> None:
    assert len(GIF) == 43
    assert GIF.startswith(b"GIF89a\x01\x00\x01\x00") and GIF.endswith(b";")
    assert GIF[19:21] == b"!\xf9" and GIF[22] & 1  # graphic control: transparency on


def test_pixel_params_become_string_columns() -> None:
    req = parse_params(
        [
            ("td_format", "pixel"),
            ("td_write_key", "1/k"),
            ("a", "1"),
            ("a", "2"),
            ("b", ""),
            ("td_record_time", "1700000000"),
            ("td_ip", "td_ip"),
            ("td_ua", "td_ua"),
            ("td_global_id", "td_global_id"),
            ("td_redirect", "https://x/"),
        ]
    )
    assert req.key == "1/k"
    assert req.redirect == "https://x/"
    record = msgspec.json.decode(pixel_record(req, "G", "1.2.3.4", "UA/1"))
    assert record == {
        "a": "2",
        "b": "",
        "td_global_id": "G",
        "td_ip": "1.2.3.4",
        "td_ua": "UA/1",
        "time": "1700000000",
    }


def test_pixel_special_names_with_other_values_are_plain_columns() -> None:
    req = parse_params([("td_ip", "9.9.9.9"), ("td_ua", "mine"), ("td_global_id", "gid")])
    assert not (req.wants_ip or req.wants_ua or req.wants_global_id)
    record = msgspec.json.decode(pixel_record(req, None, "1.2.3.4", "UA"))
    assert record == {"td_ip": "9.9.9.9", "td_ua": "mine", "td_global_id": "gid"}


@pytest.mark.parametrize(
    "query",
    [
        "a=1&b=2",
        "a=1&&b=",
        "a&b=c=d",
        "k=%E2%9C%93&sp=a+b&pct=100%25",
        "td_write_key=1%2Fabc&x=%zz",
        "bad=%ff%fe",
        "=v&k=",
        "",
    ],
)
def test_query_params_match_parse_qsl(query: str) -> None:
    assert query_params(query).pairs == parse_qsl(query, keep_blank_values=True)


def test_query_params_tell_escapes_that_are_not_utf8() -> None:
    assert query_params("k=%E2%9C%93&t=a+b").utf8
    assert not query_params("k=%ff%fe").utf8
    assert not query_params("%C3=1").utf8  # a name cut inside a character
    assert query_params("k=%zz").utf8  # not an escape at all: kept as it is
