"""Property-based tests of every parser at the doors: whatever the input, each either
answers within bounds or raises its documented error (HTTPError, whose ApiError
subclass the REST API uses) — never anything else, which the server would answer 500.

Pure unit tests of the parsing functions. Examples are few per property (the whole file
runs in seconds) and mix arbitrary bytes with near-valid input, which is where parsers
break: JSON a byte away from valid, deep nesting, gzip members cut short, msgpack of
every type, multipart forms with odd headers.
"""

from __future__ import annotations

import gzip
import itertools
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import msgpack
import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tdedge.api import bulk_import, msgpack_records
from tdedge.api.forms import form_fields
from tdedge.api.forms import query_params as api_query_params
from tdedge.edge import inflation, nesting
from tdedge.edge.auth import key_refusal, legacy_key, records_key, url_key
from tdedge.edge.body import record_from_body
from tdedge.edge.cdp import parse_query
from tdedge.edge.cookies import cookie_value, host_name, ssc_domain, valid_cookie_domain
from tdedge.edge.http import HTTPError
from tdedge.edge.ingest import (
    DeepEvent,
    Failure,
    Fill,
    check_event,
    collection_names,
    fill,
    kept,
    media_mode,
    receipt,
    split_events,
)
from tdedge.edge.legacy import pixel_form, postback_names
from tdedge.edge.mobile import answer_body, collection, from_keen, keen_time, split_collections
from tdedge.edge.p13n import DoorError, _td1_key, parse_event
from tdedge.edge.peers import TrustedProxies
from tdedge.edge.pixel import form_params, parse_params, pixel_params, pixel_record, query_params
from tdedge.edge.records import ingest_route
from tdedge.edge.redirect import RedirectPolicy, needs_global_id, substitute
from tdedge.names import is_valid_name
from tdedge.realtime import tokens

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DEPTH = 16  # small, so that deep input is cheap to make
FAILURE_REASONS = {
    "invalid_property_name",
    "not_an_object",
    "event_too_large",
    nesting.TOO_DEEP,
}


# Inputs.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@st.composite
def nested_json(draw: st.DrawFn) -> bytes:
    """An object holding arrays and objects nested 0 to 3 times the limit deep, or past
    what the decoder itself can take."""
    levels = draw(st.integers(0, 3 * DEPTH) | st.integers(900, 1500))
    # A short pattern of openers, repeated: cheap to draw however deep.
    pattern = draw(st.lists(st.sampled_from(["[", '{"k":']), min_size=1, max_size=4))
    opens = list(itertools.islice(itertools.cycle(pattern), levels))
    closes = ["]" if o == "[" else "}" for o in reversed(opens)]
    return ('{"deep":' + "".join(opens) + "1" + "".join(closes) + "}").encode()


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` with a few bytes inserted, deleted or changed: almost valid."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(["insert", "delete", "change"]))
        byte = draw(st.sampled_from([*b'{}[]",:\\\x00\xff u0', draw(st.integers(0, 255))]))
        if what == "insert":
            data.insert(at, byte)
        elif at < len(data):
            if what == "delete":
                del data[at]
            else:
                data[at] = byte
    return bytes(data)


json_bytes = json_values.map(msgspec.json.encode)
object_bytes = json_objects.map(msgspec.json.encode)
form_bytes = st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=6).map(
    lambda pairs: urlencode(pairs).encode()
)
bodies = st.one_of(
    st.binary(max_size=300),
    object_bytes,
    json_bytes,
    nested_json(),
    form_bytes,
    mutated(object_bytes | nested_json() | form_bytes),
)
content_types = st.sampled_from(
    [
        None,
        "",
        "application/json",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "text/plain",
    ]
)


def assert_object(record: bytes, depth: int) -> None:
    value = msgspec.json.decode(record)
    assert isinstance(value, dict)
    assert not nesting.deeper_than(record, depth)


# Bodies and forms: the Postback doors.
@FUZZ
@given(bodies, content_types)
def test_postback_bodies(body: bytes, content_type: str | None) -> None:
    try:
        record = record_from_body(body, content_type, DEPTH)
    except HTTPError as e:
        assert e.status == 400
        return
    assert_object(record, DEPTH)
    assert len(record) <= 8 * len(body) + 64


# The p13n door's event.
@FUZZ
@given(bodies)
def test_p13n_events(body: bytes) -> None:
    try:
        event = parse_event(body, DEPTH)
    except DoorError as e:
        assert (e.status, e.code) == (400, 3004)
        return
    assert isinstance(event, dict)
    assert not nesting.deeper_than(body, DEPTH)


# Events: the Data Ingestion API.
@st.composite
def ingest_bodies(draw: st.DrawFn) -> bytes:
    events = draw(st.lists(object_bytes | nested_json() | json_bytes, max_size=8))
    body = b'{"events":[' + b",".join(events) + b"]}"
    return draw(st.just(body) | mutated(st.just(body)))


@FUZZ
@given(ingest_bodies() | bodies)
def test_ingest_events(body: bytes) -> None:
    try:
        events = split_events(body, DEPTH)
    except HTTPError as e:
        assert e.status == 400
        return
    assert 1 <= len(events.items) <= 500
    for raw in events.items:
        checked = check_event(raw, events.max_depth)
        assert len(kept(raw, 100)) <= 100
        if isinstance(checked, Failure):
            assert checked.reason in FAILURE_REASONS
            continue
        assert not isinstance(raw, DeepEvent)
        assert not nesting.deeper_than(memoryview(raw), DEPTH)
        assert msgspec.json.decode(bytes(raw)) == checked
        assert "td_ip" in msgspec.json.decode(fill(dict(checked), Fill(ip="1.2.3.4")))


# Events: the pre-1.0 mobile SDKs' Keen format.
keen_keys = st.sampled_from(["keen", "#UUID", "#SSUT", "time", "uuid", "x"]) | st.text(max_size=8)
keen_values = (
    json_values
    | st.builds(lambda t: {"timestamp": t}, st.text(max_size=30))
    | st.sampled_from(
        [
            {"timestamp": "2021-04-22T10:00:00.123+0900"},
            {"timestamp": "2022-09-30T18:30:00+09:00"},
            {"timestamp": "9999-12-31T23:59:59+14:00"},
            True,
            "column",
            "",
        ]
    )
)
keen_events = st.dictionaries(keen_keys, keen_values, max_size=6).map(msgspec.json.encode)


@st.composite
def keen_bodies(draw: st.DrawFn) -> bytes:
    collections = draw(
        st.lists(
            st.tuples(
                st.text(max_size=12) | st.just("db.t"),
                st.lists(keen_events | nested_json() | json_bytes, max_size=4),
            ),
            max_size=3,
        )
    )
    body = (
        b"{"
        + b",".join(
            msgspec.json.encode(name) + b":[" + b",".join(events) + b"]"
            for name, events in collections
        )
        + b"}"
    )
    return draw(st.just(body) | mutated(st.just(body)))


@FUZZ
@given(keen_bodies() | bodies)
def test_keen_bodies(body: bytes) -> None:
    try:
        found = split_collections(body, DEPTH)
    except HTTPError as e:
        assert e.status == 400
        return
    assert found.count() >= 1
    answer = []
    for name, events in found.items:
        database, table, _ = collection(name)
        assert len(database) <= 256 and len(table) <= 256
        results = []
        for raw in events:
            checked = check_event(raw, found.max_depth)
            if not isinstance(checked, Failure):
                assert isinstance(raw, msgspec.Raw)
                assert not nesting.deeper_than(memoryview(raw), DEPTH)
                checked = from_keen(checked, 1_700_000_000)
            if isinstance(checked, Failure):
                assert checked.reason in {*FAILURE_REASONS, "invalid_property_name"}
                results.append(receipt(checked))
                continue
            # What the Keen client added is turned into columns, or kept as sent.
            assert checked.get("#SSUT") is not True
            assert not isinstance(checked.get("#SSUT"), str)
            msgspec.json.encode(checked)
            results.append(b'{"success":true}')
        answer.append((name, results))
    decoded = msgspec.json.decode(answer_body(answer))
    assert list(decoded) == list(dict(answer))


@FUZZ
@given(st.text(max_size=40) | st.none(), st.text(max_size=40) | st.none())
@example("0001-01-01T00:00:00+14:00", None)
@example("9999-12-31T23:59:59-14:00", None)
@example("2021-04-22T10:00:00.123+0900", "x")
def test_keen_time(stamp: str | None, other: str | None) -> None:
    seconds = keen_time({"timestamp": stamp} if other is None else {"timestamp": stamp, "o": 1})
    assert seconds is None or 0 <= seconds < 4_102_444_800
    assert keen_time(stamp) is None


@FUZZ
@given(st.text(max_size=80) | st.none())
def test_ingest_media_types(content_type: str | None) -> None:
    try:
        media_mode(content_type)
    except HTTPError as e:
        assert e.status == 415


# Names.
paths = st.text(max_size=300) | st.builds(
    lambda a, b: f"/{a}/{b}", st.text(max_size=140), st.text(max_size=140)
)


@FUZZ
@given(paths)
def test_names(path: str) -> None:
    database, table, valid = collection_names(path)
    assert len(database) <= 256 and len(table) <= 256
    assert valid == (is_valid_name(database) and is_valid_name(table))
    ingest_route(path)
    try:
        database, table = postback_names("/postback/v3/event/" + path.lstrip("/"))
    except HTTPError as e:
        assert (e.status, e.code) == (400, "invalid_name")
        return
    assert is_valid_name(database) and is_valid_name(table)
    assert database == database.lower() and table == table.lower()


# gzip.
@st.composite
def gzip_bodies(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(st.binary(max_size=200).map(gzip.compress), max_size=6))
    body = b"".join(members)
    cut = draw(st.integers(0, len(body)))
    tail = draw(st.sampled_from([b"", b"\x00" * 8, b"garbage", body[:cut]]))
    return draw(st.sampled_from([body + tail, body[:cut], body])) or body


@FUZZ
@given(gzip_bodies() | st.binary(max_size=200) | mutated(gzip_bodies()))
def test_gzip_bodies(body: bytes) -> None:
    assert len(inflation.head(body, 50)) <= 50
    try:
        out = inflation.gunzip(body, 600, 4)
    except HTTPError as e:
        assert (e.status, e.code) in {(400, "invalid_gzip"), (413, "body_too_large")}
        return
    assert len(out) <= 600


# deflate (the pre-1.0 mobile SDKs): a zlib stream, or a raw one.
@st.composite
def deflate_bodies(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=300))
    wbits = draw(st.sampled_from([15, -15, 9]))
    packer = zlib.compressobj(wbits=wbits)
    body = packer.compress(data) + packer.flush()
    cut = draw(st.integers(0, len(body)))
    tail = draw(st.sampled_from([b"", b"\x00" * 4, b"garbage"]))
    return draw(st.sampled_from([body + tail, body[:cut], body]))


@FUZZ
@given(deflate_bodies() | st.binary(max_size=200) | mutated(deflate_bodies()))
def test_deflate_bodies(body: bytes) -> None:
    for wbits in (inflation.ZLIB_WBITS, inflation.RAW_WBITS):
        assert len(inflation.head(body, 50, wbits)) <= 50
    try:
        out = inflation.inflate(body, 600)
    except HTTPError as e:
        assert (e.status, e.code) in {(400, "invalid_deflate"), (413, "body_too_large")}
        return
    assert len(out) <= 600


def test_deflate_streams_inflate_whole() -> None:
    data = b'{"db.t":[{"a":1}]}' * 50
    for wbits in (15, -15):
        packer = zlib.compressobj(wbits=wbits)
        body = packer.compress(data) + packer.flush()
        assert inflation.inflate(body, len(data)) == data
        assert inflation.inflate(body + b"\x00\x00", len(data)) == data
        try:
            inflation.inflate(body, len(data) - 1)
        except HTTPError as e:
            assert e.status == 413
        else:
            raise AssertionError("inflated past the limit")
    assert inflation.inflate(b"", 10) == b""


# JSON depth itself.
@FUZZ
@given(bodies | ingest_bodies(), st.integers(0, 4), st.integers(0, 3 * DEPTH))
def test_depth_measures(text: bytes, level: int, limit: int) -> None:
    d = nesting.depths(text)
    assert len(d) == len(text)
    for start, end in nesting.deep_values(text, level, limit):
        assert 0 <= start < end <= len(text)
    nesting.deeper_than(text, limit)


# Pixel parameters.
query_strings = st.one_of(
    st.text(max_size=120),
    st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=6).map(urlencode),
    st.lists(st.binary(max_size=6).map(lambda b: quote(b, safe="")), max_size=6).map(
        lambda parts: "&".join(f"k{i}={p}" for i, p in enumerate(parts))
    ),
).map(lambda q: q + "&td_format=pixel")


@dataclass
class Headers:
    values: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return next((v for k, v in self.values if k == key), default)

    def items(self) -> list[tuple[str, str]]:
        return self.values


@dataclass
class FakeScope:
    """A request's scope, as the parsers read it."""

    query_string: str = ""
    headers: Headers = field(default_factory=Headers)
    method: str = "POST"
    path: str = "/postback/v3/event/db/t"
    client: str = "127.0.0.1:5000"
    authority: str | None = None


@FUZZ
@given(query_strings, st.binary(max_size=120) | form_bytes, st.booleans())
def test_pixel_parameters(query: str, body: bytes, is_form: bool) -> None:
    params = query_params(query)
    assert len(params.pairs) <= query.count("&") + 1
    found = pixel_params(query)
    assert found is None or found.is_pixel()
    form_params(body)
    content_type = "application/x-www-form-urlencoded" if is_form else "text/plain"
    scope = FakeScope(query, Headers([("content-type", content_type)]))
    posted = pixel_form(scope, body)
    for p in (params, posted):
        if p is None:
            continue
        req = parse_params(p.pairs)
        record = msgspec.json.decode(pixel_record(req, "gid", "1.2.3.4", "ua"))
        assert isinstance(record, dict) and all(isinstance(v, str) for v in record.values())


@FUZZ
@given(st.text(max_size=200), st.text(max_size=40))
def test_redirect_targets(url: str, global_id: str) -> None:
    policy = RedirectPolicy(("example.com", "*.example.org"))
    try:
        policy.check(url)
    except HTTPError as e:
        assert e.status == 400
    if needs_global_id(url):
        substitute(url, global_id)


# CDP lookups: what fetchUserSegments sends, near misses of it, and anything.
lookup_tokens = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(max_size=40),
)
lookup_queries = st.one_of(
    st.text(max_size=160),
    st.tuples(
        st.sampled_from(["2", "1", "", "2&callback=cb"]),
        st.lists(lookup_tokens, max_size=5).map(",".join),
        st.lists(st.tuples(st.text(max_size=10), st.text(max_size=12)), max_size=3),
    ).map(
        lambda parts: (
            f"version={parts[0]}&token={parts[1]}&"
            + urlencode([(f"key.{k}", v) for k, v in parts[2]])
        )
    ),
)
LOOKUP_REASONS = {
    "invalid_query",
    "jsonp_not_supported",
    "unsupported_version",
    "missing_token",
    "too_many_tokens",
    "invalid_token",
    "invalid_key",
    "duplicate_key",
}


@FUZZ
@given(lookup_queries)
def test_lookup_queries(query: str) -> None:
    try:
        asked = parse_query(query, 3)
    except HTTPError as e:
        assert (e.status, e.code in LOOKUP_REASONS) == (400, True), e.code
        return
    assert 1 <= len(asked.digests) <= 3 and len(set(asked.digests)) == len(asked.digests)
    assert all(len(d) == 32 for d in asked.digests)


# Credentials, cookies, client addresses.
header_values = st.text(max_size=80)


@FUZZ
@given(header_values, header_values, st.text(max_size=80))
def test_credentials(authorization: str, write_key: str, query: str) -> None:
    headers = Headers([("authorization", authorization), ("x-td-write-key", write_key)])
    for key in (legacy_key(headers, query), records_key(headers), url_key(query)):
        assert key is None or isinstance(key, str)
    refusal = key_refusal(FakeScope(query), records_key(headers))
    assert refusal is None or refusal.status == 403
    _td1_key(authorization)
    tokens.parse(authorization)


@FUZZ
@given(st.lists(header_values, max_size=3), st.text(max_size=60), st.text(max_size=60))
def test_cookies_and_hosts(cookies: list[str], domain: str, host: str) -> None:
    value = cookie_value([("cookie", c) for c in cookies], "_td_ssc_id")
    assert value is None or len(value) == 36
    valid_cookie_domain(domain)
    host_name(host)
    try:
        ssc_domain(domain, host)
    except HTTPError as e:
        assert (e.status, e.code) == (400, "invalid_cookie_domain")


@FUZZ
@given(st.text(max_size=50), st.lists(st.text(max_size=50), max_size=3))
def test_client_addresses(peer: str, forwarded: list[str]) -> None:
    proxies = TrustedProxies(["127.0.0.0/8", "10.0.0.0/8", "::1/128"])
    assert isinstance(proxies.client_ip(peer, forwarded), str)
    assert isinstance(proxies.client_ip("127.0.0.1:1", forwarded), str)


# REST API forms.
@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b0undary", "x", "----WebKitFormBoundary7MA4"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.text(max_size=10))
        charset = draw(
            st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=nope"])
        )
        encoding = draw(st.sampled_from(["", "Content-Transfer-Encoding: base64\r\n", ""]))
        value = draw(st.binary(max_size=30))
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
            f"Content-Type: text/plain{charset}\r\n{encoding}\r\n".encode()
            + value
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    declared = draw(
        st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data"])
    )
    return draw(st.just(body) | mutated(st.just(body))), declared


@FUZZ
@given(
    multipart_bodies()
    | st.tuples(form_bytes | st.binary(max_size=100), content_types.map(lambda c: c or ""))
)
@example(  # a charset Python does not know was a LookupError, answered 500
    (
        b'--b\r\nContent-Disposition: form-data; name="q"\r\n'
        b"Content-Type: text/plain; charset=nope\r\n\r\nx\r\n--b--\r\n",
        "multipart/form-data; boundary=b",
    )
)
def test_rest_api_forms(case: tuple[bytes, str]) -> None:
    body, content_type = case
    try:
        fields = form_fields(body, content_type)
    except HTTPError as e:
        assert e.status == 400
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    api_query_params(body.decode("latin-1"))


# msgpack bulk imports.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def msgpack_streams(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(msgpack_values, max_size=5))
    packed = b"".join(msgpack.packb(v) for v in items)
    extra = draw(
        st.sampled_from(
            [
                b"",
                b"\xd6\xff\x00\x00\x00\x01",  # a timestamp
                b"\xd4\x05\x01",  # an extension type
                b"\x81\xa1a" + b"\x91" * (2 * DEPTH) + b"\x01",  # deep
                b"\x81\xa1a" + b"\x91" * 1500 + b"\x01",  # past msgpack's own stack
            ]
        )
    )
    return packed + extra


@FUZZ
@given(msgpack_streams() | mutated(msgpack_streams()) | st.binary(max_size=200))
def test_bulk_import_parts(data: bytes) -> None:
    try:
        found = list(msgpack_records.records([data], 1000, DEPTH))
    except HTTPError as e:
        assert e.status in (400, 413)
    else:
        assert len(found) <= len(data)
        for record in found:
            if not record.too_large:
                assert_object(record.json, DEPTH)
    try:
        out = b"".join(bulk_import.inflated(data, 500))
    except HTTPError as e:
        assert e.status in (400, 413)
    else:
        assert len(out) <= 500
    assert b"".join(bulk_import.inflated(gzip.compress(data), len(data))) == data
