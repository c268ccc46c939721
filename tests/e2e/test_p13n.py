"""The p13n door through the real server: the documented example, every error code,
header-name case, segments from SQL over ingested rows (on demand and on schedule)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tdedge.realtime import tokens
from tests.e2e.conftest import Server, free_port
from tests.e2e.p13n_support import CLIENT, CONFIG, MEDIA, P13n


@pytest.fixture(scope="module")
def p13n(tmp_path_factory: pytest.TempPathFactory) -> Iterator[P13n]:
    root = tmp_path_factory.mktemp("p13n")
    port = free_port()
    server = Server(root / "data", ["--p13n-port", str(port)])
    server.start()
    try:
        p = P13n(server, port)
        p.wait_ready()
        server.cli("db", "create", "retail")
        p.apply(CONFIG, root)
        p.token("web", "web")
        p.token("public", "shop", "--public")
        p.token("shop_server", "shop")
        p.token("walled", "web", "--allow-ip", "10.0.0.0/8", "--allow-ip", "192.168.0.0/16")
        p.token("local", "web", "--allow-ip", "127.0.0.0/8")
        p.token("other_account", "web", "--account", "2")
        p.token("revoked", "web")
        revoked = tokens.parse(p.tokens["revoked"])
        assert revoked is not None
        server.cli("p13n", "tokens", "revoke", tokens.token_id(revoked.digest))
        p.tokens["account2_key"] = server.cli(
            "keys", "create", "--account", "2", "--type", "master"
        ).stdout.strip()
        yield p
    finally:
        server.kill()


def code(r: httpx.Response) -> tuple[int, int]:
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "message"}
    return r.status_code, body["code"]


def test_the_documented_curl_example(p13n: P13n, tmp_path: Path) -> None:
    """spec/personalization-api.md's curl command: the event lands in its table and,
    once the person is in the segment and has bought, the documented offer comes back."""
    server = p13n.server
    member = {"td_client_id": CLIENT, "tier": "gold", "loyalty": "high"}
    assert server.postback("retail", "members", member, key=server.master_key).status_code == 200
    server.wait_for("SELECT count(*) AS n FROM retail.members", lambda r: r[0]["n"] >= 1)
    out = server.cli("p13n", "refresh", "--service", "web").stdout
    assert "segment 1588214: 1 rows" in out and "attribute loyalty: 1 rows" in out
    bought = p13n.post(
        {"td_client_id": CLIENT, "td_path": "/checkout/thanks"}, path="/retail/purchases"
    )
    assert bought.status_code == 200

    account_id, instance_id, token = p13n.tokens["web"].split("/")
    done = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{p13n.url}/retail/pageviews",
            "--header",
            "Content-Type: application/vnd.treasuredata.v1+json",
            "--header",
            f"Authorization: TD1 {server.master_key}",
            "--header",
            f"WP13n-Token: {account_id}/{instance_id}/{token}",
            "--data",
            '{\n"td_client_id": "42a508e2-d9b1-4baa-9eb2-6c3fb8bd5e16",\n'
            '"td_url": "https://example.com/retail",\n"td_path": "/retail"\n}',
            "-w",
            "\n%{http_code}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    assert status == "200"
    assert msgspec.json.decode(body) == {
        "offers": {
            "offer_for_high_loyalty": {
                "attributes": {"status": "high"},
                "batch_segments": [{"id": "1588214"}],
            }
        }
    }
    rows = server.wait_for(
        "SELECT td_client_id, td_url, td_path FROM retail.pageviews WHERE td_path = '/retail'",
        lambda r: len(r) == 1,
    )
    assert rows == [
        {"td_client_id": CLIENT, "td_url": "https://example.com/retail", "td_path": "/retail"}
    ]
    server.wait_for(
        "SELECT td_path FROM retail.purchases", lambda r: r == [{"td_path": "/checkout/thanks"}]
    )


def test_nothing_matches_gives_empty_offers(p13n: P13n) -> None:
    r = p13n.post({"email": "nobody@example.com", "td_path": "/"})
    assert (r.status_code, r.json()) == (200, {"offers": {}})
    assert r.headers["content-type"] == "application/json"


def test_the_host_name_picks_the_door_on_the_main_port(p13n: P13n) -> None:
    r = httpx.post(
        f"{p13n.server.url}/retail/pageviews",
        content=b'{"email": "host@example.com", "product_category": "women"}',
        headers={
            "Host": "us01.p13n.in.treasuredata.com",
            "Content-Type": MEDIA,
            "Authorization": f"TD1 {p13n.server.master_key}",
            "WP13n-Token": p13n.tokens["web"],
        },
    )
    assert r.status_code == 200
    assert list(r.json()["offers"]) == ["women_shoppers"]


def test_header_names_are_case_insensitive(p13n: P13n) -> None:
    for names in (
        ("content-type", "authorization", "wp13n-token"),
        ("CONTENT-TYPE", "AUTHORIZATION", "WP13N-TOKEN"),
        ("Content-type", "Authorization", "Wp13N-Token"),
    ):
        r = httpx.post(
            f"{p13n.url}/retail/pageviews",
            content=b'{"email": "case@example.com"}',
            headers={
                names[0]: MEDIA,
                names[1]: f"TD1 {p13n.server.master_key}",
                names[2]: p13n.tokens["web"],
            },
        )
        assert r.status_code == 200, (names, r.text)
    r = p13n.post(
        {"email": "case@example.com"}, headers={"Content-Type": f"{MEDIA}; charset=utf-8"}
    )
    assert r.status_code == 200


def test_415_for_any_other_content_type(p13n: P13n) -> None:
    for media in ("application/json", "text/plain", ""):
        r = p13n.post({"email": "a@b"}, headers={"Content-Type": media})
        assert code(r) == (415, 415), media


def test_401_and_403_for_bad_api_keys(p13n: P13n) -> None:
    assert code(p13n.post({"email": "a@b"}, headers={"Authorization": ""})) == (401, 401)
    assert code(
        p13n.post({"email": "a@b"}, headers={"Authorization": f"Bearer {p13n.server.master_key}"})
    ) == (401, 401)
    assert code(p13n.post({"email": "a@b"}, key="1/" + "0" * 40)) == (401, 401)
    # Account 2's key on account 1's database.
    r = p13n.post(
        {"email": "a@b"}, key=p13n.tokens["account2_key"], token=p13n.tokens["other_account"]
    )
    assert code(r) == (403, 403)
    # The write key works as well as the master key.
    assert p13n.post({"email": "a@b"}, key=p13n.server.write_key).status_code == 200


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, 3000),
        ("1/2/abc", 3003),
        ("not a token", 3003),
        ("1/10001/" + "a" * 32, 3001),
    ],
)
def test_token_errors(p13n: P13n, token: str | None, expected: int) -> None:
    r = p13n.post({"email": "a@b"}, headers={"WP13n-Token": token or ""})
    assert code(r) == (400, expected)


def test_revoked_token_is_not_in_configuration(p13n: P13n) -> None:
    assert code(p13n.post({"email": "a@b"}, token=p13n.tokens["revoked"])) == (400, 3001)


def test_table_or_database_outside_the_configuration(p13n: P13n) -> None:
    assert code(p13n.post({"email": "a@b"}, path="/retail/members")) == (400, 3001)
    assert code(p13n.post({"email": "a@b"}, path="/test_db/pageviews")) == (400, 3001)


def test_token_account_must_be_the_key_account(p13n: P13n) -> None:
    assert code(p13n.post({"email": "a@b"}, token=p13n.tokens["other_account"])) == (400, 3002)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "an array"),
        (b'"text"', "a string"),
        (b'{"td_path": "/x"}', "no identity key"),
        (b'{"td_client_id": "", "email": null}', "empty keys"),
        (b'{"email":"a@b","x":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested past the decoder"),
        (b'{"email":"a@b","x":' + b"[" * 100 + b"]" * 100 + b"}", "nested past 100 levels"),
        (
            msgspec.json.encode({"email": "a@b", **{f"k{i}": i for i in range(2000)}}),
            "more keys than a table may have columns",
        ),
    ],
)
def test_invalid_event_object(p13n: P13n, content: bytes, why: str) -> None:
    assert code(p13n.post(None, content=content)) == (400, 3004), why


def test_ip_allow_list(p13n: P13n) -> None:
    assert code(p13n.post({"email": "a@b"}, token=p13n.tokens["walled"])) == (400, 3005)
    assert p13n.post({"email": "a@b"}, token=p13n.tokens["local"]).status_code == 200


def test_public_tokens_and_origins(p13n: P13n) -> None:
    public, origin = p13n.tokens["public"], "https://shop.example.com"
    # Public token on the server endpoint, server token on the public one.
    assert code(p13n.post({"td_client_id": "p1"}, token=public)) == (400, 3006)
    r = p13n.post(
        {"td_client_id": "p1"},
        token=p13n.tokens["shop_server"],
        path="/public/retail/pageviews",
        headers={"Origin": origin},
    )
    assert code(r) == (400, 3006)
    # Origin missing, malformed, or not allowed.
    for bad in (None, "null", "https://evil.example.com"):
        r = p13n.post(
            {"td_client_id": "p1"},
            token=public,
            path="/public/retail/pageviews",
            headers={"Origin": bad or ""},
        )
        assert code(r) == (400, 3007), bad
    r = p13n.post(
        {"td_client_id": "p1", "product_category": "shoes", "email": "secret@example.com"},
        token=public,
        path="/public/retail/pageviews",
        headers={"Origin": origin},
    )
    assert r.status_code == 200
    # td-js-sdk's fetchPersonalization sends credentials: a browser hands the answer to
    # the page only with the exact origin and Access-Control-Allow-Credentials.
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["vary"] == "Origin"
    # The sensitive attribute stays out of public answers.
    assert r.json() == {
        "offers": {"hello": {"attributes": {"category": "shoes"}, "batch_segments": []}}
    }
    server_view = p13n.post({"td_client_id": "p1"}, token=p13n.tokens["shop_server"])
    assert server_view.json()["offers"]["hello"]["attributes"]["email"] == "secret@example.com"
    pre = httpx.options(
        f"{p13n.url}/public/retail/pageviews",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,wp13n-token",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == origin
    assert pre.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "wp13n-token"} <= allowed
    assert "POST" in pre.headers["access-control-allow-methods"]
    # Errors are readable by the page too (a 3007 it can report).
    refused = p13n.post(
        {"td_client_id": "p1"},
        token=public,
        path="/public/retail/pageviews",
        headers={"Origin": "https://evil.example.com"},
    )
    assert code(refused) == (400, 3007)
    assert refused.headers["access-control-allow-credentials"] == "true"


def test_refused_requests_are_kept_as_import_errors(p13n: P13n) -> None:
    assert code(p13n.post({"td_path": "/kept"})) == (400, 3004)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reasons = [e.get("reason") for e in p13n.server.errors()]
        if "p13n_3004" in reasons:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no p13n_3004 import error: {reasons}")


def test_not_post(p13n: P13n) -> None:
    r = httpx.get(f"{p13n.url}/retail/pageviews")
    assert code(r) == (405, 405)


def test_scheduled_segment_refresh_from_ingested_rows(p13n: P13n) -> None:
    """Segment 9001 refreshes every second in the loader: a member ingested through the
    Postback API gets the offer without anyone running `tdedge p13n refresh`."""
    server = p13n.server
    who = "vip-person-1"
    assert p13n.post({"td_client_id": who}).json()["offers"] == {}
    r = server.postback(
        "retail", "members", {"td_client_id": who, "tier": "vip"}, key=server.master_key
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 60
    offers: dict[str, Any] = {}
    while time.monotonic() < deadline:
        offers = p13n.post({"td_client_id": who}).json()["offers"]
        if "vip_lounge" in offers:
            break
        time.sleep(0.5)
    assert offers.get("vip_lounge", {}).get("batch_segments") == [{"id": "9001"}], offers
    assert offers["vip_lounge"]["attributes"]["visits"] >= 2
    profile = p13n.profile(f"td_client_id={who}")
    assert profile["segments"] == ["9001"]


def test_profile_and_explain_commands(p13n: P13n) -> None:
    p13n.post(
        {
            "td_client_id": "explained",
            "product_category": "women",
            "product_name": "tank",
            "amount": 12.5,
        },
        path="/retail/purchases",
    )
    profile = p13n.profile("td_client_id=explained")
    assert profile["attributes"]["last_category"] == "women"
    assert profile["attributes"]["recent_products"] == ["tank"]
    assert profile["attributes"]["total_spend"] == 12.5
    out = p13n.server.cli("p13n", "explain", "--service", "web", "td_client_id=explained").stdout
    assert "PASS section women_shoppers" in out
    assert "FAIL section offer_for_high_loyalty" in out
    assert "FAIL in segment 1588214" in out
    missing = p13n.server.cli(
        "p13n", "profile", "--service", "web", "td_client_id=nobody", check=False
    )
    assert missing.returncode != 0 and "no profile" in missing.stderr
