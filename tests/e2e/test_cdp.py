"""The CDP door through the real server: fetchUserSegments' lookups answered from the
real-time profiles and batch segments, every refusal with its status and reason, CORS
with credentials, the host names that pick the door, and its metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tdedge.realtime import tokens
from tests.e2e.conftest import Server, free_port, wait_healthy
from tests.e2e.p13n_support import P13n

CONFIG = (Path(__file__).parent / "data" / "cdp.yaml").read_text()
LOOKUP = "/cdp/lookup/collect/segments"
SHOP = "https://shop.example.com"
GOLD, SILVER, BATCH_ONLY = (str(uuid.uuid4()) for _ in range(3))
GLOBAL_ID = str(uuid.uuid4())
EMAIL = "gold@example.com"


@dataclass
class Cdp:
    p13n: P13n
    url: str  # the --cdp-port
    tokens: dict[str, str] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)

    @property
    def server(self) -> Server:
        return self.p13n.server

    def get(
        self,
        *names: str,
        keys: dict[str, str] | None = None,
        query: str | None = None,
        url: str | None = None,
        **kw: Any,
    ) -> httpx.Response:
        if query is None:
            joined = ",".join(self.tokens.get(n, n) for n in names)
            query = f"version=2&token={joined}" + "".join(
                f"&key.{k}={v}" for k, v in (keys or {}).items()
            )
        return httpx.get(f"{url or self.url}{LOOKUP}?{query}", timeout=30, **kw)


@pytest.fixture(scope="module")
def cdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdp]:
    root = tmp_path_factory.mktemp("cdp")
    p13n_port, cdp_port = free_port(), free_port()
    server = Server(root / "data", ["--p13n-port", str(p13n_port), "--cdp-port", str(cdp_port)])
    server.start()
    try:
        p = P13n(server, p13n_port)
        p.wait_ready()
        wait_healthy(f"http://127.0.0.1:{cdp_port}")
        c = Cdp(p, f"http://127.0.0.1:{cdp_port}")
        server.cli("db", "create", "retail")
        for client, tier in ((GOLD, "gold"), (SILVER, "silver"), (BATCH_ONLY, "gold")):
            member = {"td_client_id": client, "tier": tier}
            assert server.postback("retail", "members", member, key=server.master_key).is_success
        server.wait_for("SELECT count(*) AS n FROM retail.members", lambda r: r[0]["n"] == 3)
        p.apply(CONFIG, root)
        assert "segment 1588214: 2 rows" in server.cli("p13n", "refresh").stdout
        p.token("web", "web")
        p.token("other_server", "other")
        for event, token in (
            ({"td_client_id": GOLD, "email": EMAIL, "product_category": "shoes"}, "web"),
            ({"td_client_id": SILVER, "product_category": "hats"}, "web"),
            ({"td_global_id": GLOBAL_ID, "product_category": "bags"}, "web"),
            ({"td_client_id": GOLD}, "other_server"),
        ):
            assert p.post(event, token=p.tokens[token]).status_code == 200
        for name, service, lookup in (
            ("gold", "web", "gold"),
            ("by_email", "web", "by_email"),
            ("by_global_id", "web", "by_global_id"),
            ("anyone", "other", "anyone"),
            ("revoked", "web", "gold"),
        ):
            c.tokens[name] = server.cli(
                "p13n", "tokens", "create", service, "--lookup", lookup
            ).stdout.strip()
        revoked = tokens.parse_lookup(c.tokens["revoked"])
        assert revoked is not None
        server.cli("p13n", "tokens", "revoke", tokens.token_id(revoked))
        ids = server.cli("p13n", "tokens", "list", "--format", "json").stdout
        c.instances = {t["service"]: str(t["instance_id"]) for t in msgspec.json.decode(ids)}
        yield c
    finally:
        server.kill()


def refusal(r: httpx.Response) -> tuple[int, str]:
    """The status and reason of a refusal, after checking its body's shape (the one the
    mobile SDKs read: error, message, status)."""
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "message", "status"} and body["status"] == r.status_code
    return r.status_code, body["error"]


def test_one_entry_per_token_in_token_order(cdp: Cdp) -> None:
    r = cdp.get("gold", "by_email", keys={"td_client_id": GOLD, "email": EMAIL})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == [
        {
            "key": {"td_client_id": GOLD},
            "values": ["1588214"],
            "attributes": {"last_category": "shoes", "tier": "gold"},
            "audienceId": cdp.instances["web"],
        },
        {
            "key": {"email": EMAIL},
            "values": [],
            "attributes": {"last_category": "shoes", "views": 1},
            "audienceId": cdp.instances["web"],
        },
    ]
    # The same person through another service's lookup: its own profile, its own id.
    assert cdp.get("anyone", keys={"td_client_id": GOLD}).json() == [
        {
            "key": {"td_client_id": GOLD},
            "values": [],
            "attributes": {},
            "audienceId": cdp.instances["other"],
        }
    ]


def test_what_the_sdks_send_is_understood(cdp: Cdp) -> None:
    """td-js-sdk leaves commas and @ as they are; the mobile SDKs encode everything."""
    gold, by_email = cdp.tokens["gold"], cdp.tokens["by_email"]
    js = f"version=2&token={gold},{by_email}&key.td_client_id={GOLD}&key.email={EMAIL}"
    mobile = httpx.QueryParams(
        {
            "version": "2",
            "token": f"{gold},{by_email}",
            "key.td_client_id": GOLD,
            "key.email": EMAIL,
        }
    )
    assert cdp.get(query=js).json() == cdp.get(query=str(mobile)).json()
    assert len(cdp.get(query=js).json()) == 2


def test_who_is_not_found(cdp: Cdp) -> None:
    # Silver is known, but not in the gold lookup's segment: Treasure Data answers a
    # token only for the profiles of its segments.
    assert cdp.get("gold", keys={"td_client_id": SILVER}).json() == []
    assert cdp.get("gold", keys={"td_client_id": str(uuid.uuid4())}).json() == []
    # A value the key column's rules refuse can be nobody's key.
    assert cdp.get("by_email", keys={"email": "not-an-email"}).json() == []
    # A token without its key in the query is skipped; the others answer.
    assert len(cdp.get("gold", "by_email", keys={"email": EMAIL}).json()) == 1


def test_batch_members_without_events_are_found(cdp: Cdp) -> None:
    assert cdp.get("gold", keys={"td_client_id": BATCH_ONLY}).json() == [
        {
            "key": {"td_client_id": BATCH_ONLY},
            "values": ["1588214"],
            "attributes": {"last_category": None, "tier": "gold"},
            "audienceId": cdp.instances["web"],
        }
    ]


def test_the_global_id_comes_from_the_cookie(cdp: Cdp) -> None:
    cookie = {"Cookie": f"_tdedge_global_id={GLOBAL_ID}"}
    expected = [
        {
            "key": {"td_global_id": GLOBAL_ID},
            "values": [],
            "attributes": {"last_category": "bags"},
            "audienceId": cdp.instances["web"],
        }
    ]
    assert cdp.get("by_global_id", headers=cookie).json() == expected
    # The query cannot name somebody else: the cookie is what counts.
    other = {"td_global_id": str(uuid.uuid4())}
    assert cdp.get("by_global_id", keys=other, headers=cookie).json() == expected
    assert refusal(cdp.get("by_global_id", keys=other)) == (400, "missing_key")
    # With another token's key, a browser without the cookie is simply not found there.
    r = cdp.get("gold", "by_global_id", keys={"td_client_id": GOLD})
    assert [e["key"] for e in r.json()] == [{"td_client_id": GOLD}]


@pytest.mark.parametrize(
    ("names", "keys", "query", "expected"),
    [
        ((), None, "version=2", (400, "missing_token")),
        ((), None, "version=2&token=not-a-token", (400, "invalid_token")),
        (("gold",), {"td_client_id": GOLD}, None, (200, "")),  # the control
        ((str(uuid.uuid4()),), {"td_client_id": GOLD}, None, (401, "unknown_token")),
        (("revoked",), {"td_client_id": GOLD}, None, (401, "unknown_token")),
        (("gold",), {"email": EMAIL}, None, (400, "unknown_key")),
        (("gold",), {"td_client_id": GOLD, "tier": "gold"}, None, (400, "unknown_key")),
        (("gold",), None, None, (400, "missing_key")),
        ((), None, "token=T&key.td_client_id=1", (400, "unsupported_version")),
        (
            (),
            None,
            "version=2&token=T&callback=TreasureJSONPCallback0",
            (400, "jsonp_not_supported"),
        ),
    ],
)
def test_refusals(
    cdp: Cdp,
    names: tuple[str, ...],
    keys: dict[str, str] | None,
    query: str | None,
    expected: tuple[int, str],
) -> None:
    r = cdp.get(*names, keys=keys, query=query)
    if expected[0] == 200:
        assert r.status_code == 200 and len(r.json()) == 1
        return
    assert refusal(r) == expected


def test_only_get(cdp: Cdp) -> None:
    r = httpx.post(f"{cdp.url}{LOOKUP}?version=2&token={cdp.tokens['gold']}", content=b"{}")
    assert refusal(r) == (405, "method_not_allowed")
    assert r.headers["allow"] == "GET"


def test_cors_with_credentials(cdp: Cdp) -> None:
    # The preflight td-js-sdk's GET causes (it sends Content-Type: application/json).
    pre = httpx.options(
        f"{cdp.url}{LOOKUP}",
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == SHOP
    assert pre.headers["access-control-allow-credentials"] == "true"
    assert "content-type" in pre.headers["access-control-allow-headers"].lower()
    assert "GET" in pre.headers["access-control-allow-methods"]
    for r in (
        cdp.get("gold", keys={"td_client_id": GOLD}, headers={"Origin": SHOP}),
        cdp.get("gold", headers={"Origin": SHOP}),  # errors too: the page can report them
    ):
        assert r.headers["access-control-allow-origin"] == SHOP
        assert r.headers["access-control-allow-credentials"] == "true"
        assert r.headers["vary"] == "Origin"
    # A page of another origin may not use the web service's tokens, nor read why.
    evil = {"Origin": "https://evil.example.com"}
    refused = cdp.get("gold", keys={"td_client_id": GOLD}, headers=evil)
    assert refusal(refused) == (403, "origin_not_allowed")
    assert "access-control-allow-origin" not in refused.headers
    # A service without allowed_origins answers any page.
    anyone = cdp.get("anyone", keys={"td_client_id": GOLD}, headers=evil)
    assert anyone.status_code == 200
    assert anyone.headers["access-control-allow-origin"] == evil["Origin"]


def test_host_names_pick_the_door(cdp: Cdp) -> None:
    main = cdp.server.url
    for host in ("cdp.in.example.com", "cdp-tokyo.in.example.com"):
        r = cdp.get("gold", keys={"td_client_id": GOLD}, url=main, headers={"Host": host})
        assert r.status_code == 200, host
        assert r.json()[0]["key"] == {"td_client_id": GOLD}
    other = cdp.get(
        "gold", keys={"td_client_id": GOLD}, url=main, headers={"Host": "in.example.com"}
    )
    assert other.status_code == 404


def test_revocation_is_seen_within_seconds(cdp: Cdp) -> None:
    token = cdp.server.cli("p13n", "tokens", "create", "web", "--lookup", "gold").stdout.strip()
    assert cdp.get(token, keys={"td_client_id": GOLD}).status_code == 200
    digest = tokens.parse_lookup(token)
    assert digest is not None
    cdp.server.cli("p13n", "tokens", "revoke", tokens.token_id(digest))
    deadline = time.monotonic() + 10
    while cdp.get(token, keys={"td_client_id": GOLD}).status_code == 200:
        assert time.monotonic() < deadline, "the revoked token still answers"
        time.sleep(0.2)
    assert refusal(cdp.get(token, keys={"td_client_id": GOLD})) == (401, "unknown_token")


def test_lookup_tokens_take_no_api_key_options(cdp: Cdp) -> None:
    done = cdp.server.cli(
        "p13n", "tokens", "create", "web", "--lookup", "gold", "--public", check=False
    )
    assert done.returncode != 0 and "--public" in done.stderr
    done = cdp.server.cli("p13n", "tokens", "create", "web", "--lookup", "nope", check=False)
    assert done.returncode != 0 and "no lookup 'nope'" in done.stderr


def test_metrics(cdp: Cdp) -> None:
    cdp.get("gold", keys={"td_client_id": GOLD})
    cdp.get(str(uuid.uuid4()), keys={"td_client_id": GOLD})
    text = httpx.get(f"{cdp.server.url}/metrics").text
    for outcome in ("found", "unknown_token"):
        line = next(
            (
                ln
                for ln in text.splitlines()
                if ln.startswith(f'tdedge_cdp_lookups_total{{outcome="{outcome}"}}')
            ),
            None,
        )
        assert line is not None and float(line.split()[-1]) >= 1, outcome
    assert 'door="cdp",route="lookup",status="401"' in text
