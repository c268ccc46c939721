"""CDP lookups (fetchUserSegments): the query, the configuration's lookups, the entries,
lookup tokens in the registry and the host names of the CDP door."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdedge.edge.app import cdp_host, door_name
from tdedge.edge.cdp import parse_query
from tdedge.edge.http import HTTPError
from tdedge.errors import NotFound
from tdedge.realtime import tokens, validation
from tdedge.realtime.errors import ConfigInvalid, UnknownService
from tdedge.realtime.lookup import entry
from tdedge.realtime.profile import Profile, Single
from tdedge.realtime.registry import Registry
from tdedge.realtime.service import Facts, Service, compile_service
from tdedge.realtime.view import View

EXAMPLE = (Path(__file__).parents[1] / "data" / "p13n-example.yaml").read_text()
LOOKUPS = """    lookups:
      - name: by_client
        key_column: td_client_id
        segments: ["1588214"]
        attributes: [last_category, loyalty, recent_products.last]
      - {name: by_email, key_column: email, attributes: [last_category]}
"""
CONFIG = EXAMPLE.replace("    personalizations:", LOOKUPS + "    personalizations:")
T0 = 1_800_000_000_000
TOKEN = "05e97f6c-e56c-41a2-bf69-a2ead74dd89d"  # the shape of Treasure Data's


def service_of(text: str) -> Service:
    service = compile_service(validation.parse(text).services[0], (), lambda p, m: None)
    assert service is not None
    return service


def refused(query: str, max_tokens: int = 20) -> tuple[int, str]:
    with pytest.raises(HTTPError) as e:
        parse_query(query, max_tokens)
    return e.value.status, e.value.code


# The query.
def test_what_the_sdks_send() -> None:
    other = "55198252-3752-4a1f-b011-62a821cae61d"
    digest, other_digest = tokens.parse_lookup(TOKEN), tokens.parse_lookup(other)
    # td-js-sdk: commas as they are, values unencoded; the mobile SDKs encode both.
    for query in (
        f"version=2&token={TOKEN},{other}&key.email=someone@somewhere.com",
        f"key.email=someone%40somewhere.com&token={TOKEN}%2C{other}&version=2",
    ):
        asked = parse_query(query, 20)
        assert asked.digests == [digest, other_digest]
        assert asked.keys == {"email": "someone@somewhere.com"}
    # Tokens any case, repeated, in several parameters: each once, in order.
    asked = parse_query(f"version=2&token={TOKEN.upper()},,{TOKEN}&token={other}&r=123", 20)
    assert asked.digests == [digest, other_digest]
    assert asked.keys == {}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"token={TOKEN}", (400, "unsupported_version")),
        (f"version=1&token={TOKEN}", (400, "unsupported_version")),
        (f"version=2&token={TOKEN}&callback=TreasureJSONPCallback0", (400, "jsonp_not_supported")),
        ("version=2", (400, "missing_token")),
        ("version=2&token=,", (400, "missing_token")),
        ("version=2&token=nope", (400, "invalid_token")),
        (f"version=2&token=1/10001/{'a' * 32}", (400, "invalid_token")),
        (f"version=2&token={TOKEN}&key.a-b=1", (400, "invalid_key")),
        (f"version=2&token={TOKEN}&key.email=a&key.email=b", (400, "duplicate_key")),
        ("version=2&" + "&".join(f"x{i}=1" for i in range(101)), (400, "invalid_query")),
    ],
)
def test_bad_queries_are_refused_with_a_reason(query: str, expected: tuple[int, str]) -> None:
    assert refused(query) == expected


def test_tokens_per_lookup_are_bounded() -> None:
    many = ",".join(tokens.new_lookup_token() for _ in range(3))
    assert refused(f"version=2&token={many}", max_tokens=2) == (400, "too_many_tokens")
    assert len(parse_query(f"version=2&token={many}", 3).digests) == 3


def test_a_personalization_token_is_named_as_such() -> None:
    with pytest.raises(HTTPError) as e:
        parse_query(f"version=2&token=1/10001/{'a' * 32}", 20)
    assert "WP13n-Token" in e.value.message


# The configuration.
def test_lookups_compile() -> None:
    service = service_of(CONFIG)
    by_client, by_email = service.lookups["by_client"], service.lookups["by_email"]
    assert (by_client.column, by_client.segments) == ("td_client_id", ("1588214",))
    assert by_client.attributes == ("last_category", "loyalty", "recent_products.last")
    assert (by_email.column, by_email.segments) == ("email", ())


def test_lookups_are_checked_against_the_service() -> None:
    bad = (
        CONFIG.replace("key_column: td_client_id\n", "key_column: user_id\n")
        .replace(
            'segments: ["1588214"]\n        attributes', 'segments: ["404"]\n        attributes'
        )
        .replace("attributes: [last_category]}", "attributes: [nope, email_seen]}")
        .replace("name: by_email", "name: by_client")
        .replace(
            "      - {name: loyalty, type: imported}",
            "      - {name: loyalty, type: imported}\n"
            "      - {name: email_seen, type: single, column: email, sensitive: true}",
        )
    )
    with pytest.raises(ConfigInvalid) as e:
        validation.parse(bad, "f.yaml")
    found = {(p.path, p.message.split(":")[0].split(" (")[0]) for p in e.value.problems}
    assert found == {
        ("services[0].lookups[0].key_column", "'user_id' is not one of the service's key_columns"),
        ("services[0].lookups[0].segments[0]", "no segment with id '404'"),
        ("services[0].lookups[1].name", "lookup 'by_client' is defined twice"),
        ("services[0].lookups[1].attributes[0]", "no attribute 'nope'"),
        ("services[0].lookups[1].attributes[1]", "'email_seen' is sensitive"),
    }
    lines = {p.line for p in e.value.problems}
    assert None not in lines  # each problem points at its line


def test_a_lookup_shape_error_points_at_its_item() -> None:
    bad = CONFIG.replace("{name: by_email, key_column: email,", "{name: by_email, key: email,")
    with pytest.raises(ConfigInvalid) as e:
        validation.parse(bad, "f.yaml")
    assert [p.path for p in e.value.problems] == ["services[0].lookups[1].key"]


# The entries.
def person() -> Profile:
    profile = Profile(id=7, created_ms=T0, keys=["td_client_id=c1", "email=a@b.example"])
    profile.singles["last_category"] = Single("shoes", T0)
    return profile


def test_a_member_of_the_lookups_segments_is_answered() -> None:
    service = service_of(CONFIG)
    facts = Facts({"1588214", "other"}, {"loyalty": "high"})
    got = entry(service, service.lookups["by_client"], "c1", person(), facts, "10001", T0)
    assert got == {
        "key": {"td_client_id": "c1"},
        "values": ["1588214"],  # only the segments the lookup may reveal
        "attributes": {"last_category": "shoes", "loyalty": "high", "recent_products.last": None},
        "audienceId": "10001",
    }


def test_who_is_not_answered() -> None:
    service = service_of(CONFIG)
    by_client, by_email = service.lookups["by_client"], service.lookups["by_email"]
    # Known to nothing.
    assert entry(service, by_email, "x@y", None, Facts(), "1", T0) is None
    # Known, but in none of the lookup's segments: Treasure Data answers a token only for
    # the profiles of its segments.
    assert entry(service, by_client, "c1", person(), Facts({"other"}), "1", T0) is None
    # A lookup without segments answers every profile, with no segment ids.
    got = entry(service, by_email, "a@b.example", person(), Facts({"1588214"}), "1", T0)
    assert (
        got is not None and got["values"] == [] and got["attributes"] == {"last_category": "shoes"}
    )


def test_batch_facts_alone_are_enough() -> None:
    """A member loaded from the lake who never sent an event has no real-time profile."""
    service = service_of(CONFIG)
    facts = Facts({"1588214"}, {"loyalty": "gold"})
    got = entry(service, service.lookups["by_client"], "c9", None, facts, "1", T0)
    assert got is not None
    assert (got["values"], got["attributes"]["loyalty"]) == (["1588214"], "gold")
    assert got["attributes"]["last_category"] is None


def test_key_values_follow_the_key_column_rules() -> None:
    text = CONFIG.replace(
        "key_columns: [td_client_id, email]",
        'key_columns: [td_client_id, {name: email, valid_regexp: ".+@.+", invalid_texts: ["n/a"]}]',
    )
    by_email = service_of(text).lookups["by_email"]
    assert by_email.key_value(" a@b.example ") == "a@b.example"
    for bad in ("", "n/a", "not-an-email", "x" * 300 + "@b"):
        assert by_email.key_value(bad) is None


# Lookup tokens.
@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    r = Registry.open(tmp_path / "control.sqlite")
    r.apply(validation.parse(CONFIG), CONFIG)
    return r


def test_lookup_tokens_are_kept_hashed(registry: Registry, tmp_path: Path) -> None:
    token = registry.create_lookup_token("web", "by_client", "site")
    digest = tokens.parse_lookup(token)
    assert digest is not None and tokens.parse_lookup(token.upper()) == digest
    raw = (tmp_path / "control.sqlite").read_bytes()
    wal = tmp_path / "control.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert token.encode() not in raw
    assert token.replace("-", "").encode() not in raw
    (info,) = registry.list_lookup_tokens()
    assert (info.token_hash, info.lookup, info.name) == (digest, "by_client", "site")
    assert info.instance_id == registry.instance_ids()["web"]
    assert info.token_id == tokens.token_id(digest)


def test_lookup_tokens_need_a_configured_lookup(registry: Registry) -> None:
    with pytest.raises(UnknownService, match="no service"):
        registry.create_lookup_token("nope", "by_client")
    with pytest.raises(UnknownService, match="lookups: by_client, by_email"):
        registry.create_lookup_token("web", "by_phone")


def test_views_find_and_forget_lookup_tokens(registry: Registry) -> None:
    view = View(registry)
    view.refresh(0.0)
    token = registry.create_lookup_token("web", "by_email")
    digest = tokens.parse_lookup(token)
    assert digest is not None
    found = view.lookup_token(digest, 0.5)  # created after the view loaded: looked up once
    assert found is not None and found.lookup == "by_email" and not found.revoked
    missing = tokens.parse_lookup(tokens.new_lookup_token())
    assert missing is not None and view.lookup_token(missing, 0.5) is None
    registry.revoke_token(found.token_id)
    view.refresh(2.0)
    again = view.lookup_token(digest, 2.0)
    assert again is not None and again.revoked
    with pytest.raises(NotFound):
        registry.revoke_token("000000000000")


# The door's host names.
@pytest.mark.parametrize(
    ("host", "cdp"),
    [
        ("cdp.in.treasuredata.com", True),
        ("cdp-tokyo.in.treasuredata.com", True),
        ("cdp-eu01.in.treasuredata.com:8443", True),
        ("cdp.in.example.com", True),
        ("in.treasuredata.com", False),
        ("cdp.example.com", False),
        ("cdpx.in.example.com", False),
        ("us01.records.in.treasuredata.com", False),
    ],
)
def test_cdp_hosts(host: str, cdp: bool) -> None:
    assert cdp_host(host) is cdp


@pytest.mark.parametrize(
    ("host", "door"),
    [
        ("us01.records.in.treasuredata.com", "records"),
        ("tokyo.p13n.in.treasuredata.co.jp", "p13n"),
        ("api.treasuredata.com:443", "api"),
        ("cdp.in.treasuredata.com", "cdp"),
        ("cdp-tokyo.in.treasuredata.com", "cdp"),
        ("in.treasuredata.com", "legacy"),
        ("127.0.0.1:8080", "legacy"),
        ("", "legacy"),
    ],
)
def test_door_by_host(host: str, door: str) -> None:
    assert door_name(host) == door
