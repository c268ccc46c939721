"""td-js-sdk 4.4 (from npm) in headless Chromium against the real server over HTTPS.

The page (tests/browser/page.html, served by tests/browser/run.mjs from another origin)
fetches the global id, tracks a pageview and a custom event, and an ``<img>`` fires the
tracking pixel; then the rows must be in their tables with the SDK's columns. It also
asks the p13n door for offers (``fetchPersonalization``) and the CDP door for the
profile's segments (``fetchUserSegments``), fetches the server-side cookie from the
records door (``fetchServerCookie``), sends a consent record (``addConsentRecord``) and
a link click under ``trackClicks`` (a keepalive fetch): all are credentialed
cross-origin calls that Chromium makes only when the preflight and the answer allow
credentials.
``scripts/test`` installs what this needs (Debian ``chromium``, ``npm ci`` in
tests/browser).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, free_port, wait_healthy

BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
CHROMIUM = "/usr/bin/chromium"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# tdedge's own id (_tdedge_id): version 7, the arrival time first (edge/ingest.py, uuids).
TDEDGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Columns td-js-sdk's trackEvent adds to every record (lib/plugins/track.js).
SDK_COLUMNS = {
    "td_version",
    "td_client_id",
    "td_charset",
    "td_language",
    "td_color",
    "td_screen",
    "td_viewport",
    "td_title",
    "td_description",
    "td_url",
    "td_user_agent",
    "td_platform",
    "td_host",
    "td_path",
}


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (Chromium runs with --ignore-certificate-errors)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate (apt-get install openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def browser_ready() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium chromium-driver)")
    if not (BROWSER_DIR / "node_modules" / "td-js-sdk" / "dist" / "td.min.js").exists():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if missing:
        pytest.fail("scripts/test installs what this test needs; missing: " + ", ".join(missing))


# What the page personalizes with: a service on test_db, a batch segment of gold members,
# a section for gold members who look at shoes, and two lookups for fetchUserSegments.
P13N_CONFIG = """
services:
  - name: site
    database: test_db
    event_tables: [p13n_views]
    key_columns: [td_client_id, td_global_id]
    attributes:
      - {name: last_category, type: single, column: product_category}
      - {name: tier, type: imported, sql: "SELECT td_client_id, tier FROM test_db.members"}
    segments:
      - {id: "777", name: gold, sql: "SELECT td_client_id FROM test_db.members WHERE tier = 'gold'"}
    personalizations:
      - section: shoes_for_gold
        criteria:
          all: [{segment: "777"}, {attribute: last_category, operator: Equal, value: shoes}]
        payload: {attributes: {category: last_category}, batch_segments: ["777"]}
    lookups:
      - name: by_client
        key_column: td_client_id
        segments: ["777"]
        attributes: [last_category, tier]
      - {name: by_global_id, key_column: td_global_id, attributes: [last_category]}
"""


@dataclass(frozen=True)
class Personalization:
    """The page's p13n and CDP settings, made through the real CLI."""

    client_id: str
    p13n_port: int
    cdp_port: int
    public_token: str
    lookup_tokens: list[str]

    @property
    def instance_id(self) -> str:
        return self.public_token.split("/")[1]


def personalize(server: Server, p13n_port: int, cdp_port: int, tmp: Path) -> Personalization:
    """A gold member (batch data, refreshed into the segment), the configuration and tokens."""
    client_id = str(uuid.uuid4())
    member = {"td_client_id": client_id, "tier": "gold"}
    stored = server.postback("test_db", "members", member, key=server.master_key, verify=False)
    assert stored.status_code == 200
    server.wait_for("SELECT count(*) AS n FROM test_db.members", lambda r: r[0]["n"] == 1)
    config = tmp / "p13n.yaml"
    config.write_text(P13N_CONFIG)
    server.cli("p13n", "apply", str(config))
    refreshed = server.cli("p13n", "refresh").stdout
    assert "segment 777: 1 rows" in refreshed, refreshed

    def token(*args: str) -> str:
        return server.cli("p13n", "tokens", "create", "site", *args).stdout.strip()

    return Personalization(
        client_id,
        p13n_port,
        cdp_port,
        token("--public"),
        [token("--lookup", "by_client"), token("--lookup", "by_global_id")],
    )


def run_page(
    server: Server, records_port: int, database: str, tmp: Path, p: Personalization
) -> dict[str, Any]:
    cert = str(tmp / "cert.pem")
    key = str(tmp / "key.pem")
    pixel_query = urllib.parse.urlencode(
        {
            "td_format": "pixel",
            "td_write_key": server.write_key,
            "td_global_id": "td_global_id",
            "td_ip": "td_ip",
            "td_ua": "td_ua",
            "campaign": "spring",
            "n": "7",
        }
    )
    done = subprocess.run(
        [
            "node", str(BROWSER_DIR / "run.mjs"),
            "--cert", cert, "--key", key,
            "--records-host", f"127.0.0.1:{records_port}",
            "--pixel-url", f"{server.url}/postback/v3/event/{database}/pixels?{pixel_query}",
            "--write-key", server.write_key,
            "--database", database,
            "--chromium", CHROMIUM,
            "--client-id", p.client_id,
            "--p13n-endpoint", f"127.0.0.1:{p.p13n_port}",
            "--p13n-token", p.public_token,
            "--p13n-table", "p13n_views",
            "--cdp-host", f"127.0.0.1:{p.cdp_port}",
            "--lookup-tokens", ",".join(p.lookup_tokens),
            # The server-side cookie from the records door, on the page's host.
            "--ssc-server", f"127.0.0.1:{records_port}",
            "--ssc-domain", "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=BROWSER_DIR,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"run.mjs printed nothing:\n{done.stderr}")
    report: dict[str, Any] = json.loads(lines[-1])
    if done.returncode != 0 or report.get("error"):
        raise AssertionError(f"browser run failed: {json.dumps(report, indent=1)}\n{done.stderr}")
    return report


def test_td_js_sdk_in_chromium(make_server: Any, tmp_path: Path, browser_ready: None) -> None:
    cert, key = self_signed(tmp_path)
    records_port, p13n_port, cdp_port = free_port(), free_port(), free_port()
    server: Server = make_server(
        [
            "--records-port", str(records_port),
            "--p13n-port", str(p13n_port),
            "--cdp-port", str(cdp_port),
            "--tls-cert", str(cert),
            "--tls-key", str(key),
        ]
    )  # fmt: skip
    assert server.url.startswith("https://")
    for port in (records_port, p13n_port, cdp_port):
        wait_healthy(f"https://127.0.0.1:{port}")
    database = "test_db"  # the write key's account owns it (created on first start)
    p = personalize(server, p13n_port, cdp_port, tmp_path)
    report = run_page(server, records_port, database, tmp_path, p)
    results = report["results"]
    context = json.dumps(report, indent=1)
    assert results["errors"] == [], context

    # The global id: answered by GET / on the records door, kept in the server's cookie.
    global_id = results["globalId"]
    assert UUID.fullmatch(global_id), context
    server_cookie = [c for c in report["cookies"] if c["name"] == "_tdedge_global_id"]
    assert len(server_cookie) == 1, context
    assert server_cookie[0]["value"] == global_id
    assert server_cookie[0]["secure"] and server_cookie[0]["httpOnly"]
    assert server_cookie[0]["sameSite"] == "None"
    # The SDK caches the same id in its own first-party cookie, until told to forget it.
    assert (results["globalIdEnabledBefore"], results["globalIdEnabled"]) == (False, True)
    assert results["cachedGlobalId"] == global_id, context
    assert results["cachedGlobalIdAfterRemove"] is None, context
    # The SDK got its receipts (any 2xx is success to it; it parses the JSON).
    assert results["pageview"] == {"receipts": [{"success": True}]}, context
    assert results["event"] == {"receipts": [{"success": True}]}, context
    assert results["pixel"] == {"width": 1, "height": 1}, context
    # What the SDK really sent: js+json in signed mode, TD1 auth — cross-origin with
    # credentials, so the browser sent them only after our preflight answer allowed it.
    records_origin = f"https://127.0.0.1:{records_port}/"
    posts = [
        r
        for r in report["requests"]
        if r["method"] == "POST" and r["url"].startswith(records_origin)
    ]
    tables = sorted(urllib.parse.urlsplit(r["url"]).path for r in posts)
    assert tables == [
        "/test_db/clicks",
        "/test_db/consents",
        "/test_db/events",
        "/test_db/pageviews",
    ], context
    for post in posts:
        assert post["requestHeaders"]["content-type"] == "application/vnd.treasuredata.v1.js+json"
        assert post["requestHeaders"]["authorization"] == f"TD1 {server.write_key}"

    pageviews = server.wait_for(
        "SELECT * FROM test_db.pageviews", lambda rows: len(rows) == 1, timeout=60
    )[0]
    events = server.wait_for(
        "SELECT * FROM test_db.events", lambda rows: len(rows) == 1, timeout=60
    )[0]
    for row in (pageviews, events):
        assert set(row) >= SDK_COLUMNS, row
        assert row["td_global_id"] == global_id  # the placeholder, replaced by the server
        assert row["td_ip"] == "127.0.0.1"  # added by the server for v1.js+json
        assert TDEDGE_ID.fullmatch(row["_tdedge_id"])
        assert row["td_url"] == report["pageUrl"]
        assert row["td_path"] == "/"
        assert row["td_title"] == "tdedge browser test"
        assert row["td_description"] == "td-js-sdk against tdedge"
        assert row["td_user_agent"].startswith(report["userAgent"])  # + ";JSSDK/4.4.x"
        assert row["td_version"].startswith("4.4")
        assert UUID.fullmatch(row["td_client_id"])
    assert pageviews["td_client_id"] == events["td_client_id"]
    assert (events["action"], events["plan"], events["seats"]) == ("signup", "pro", 3)

    pixel = server.wait_for(
        "SELECT * FROM test_db.pixels", lambda rows: len(rows) == 1, timeout=60
    )[0]
    assert pixel["campaign"] == "spring" and pixel["n"] == "7"
    assert pixel["td_global_id"] == global_id  # the same browser, the same id
    assert pixel["td_ip"] == "127.0.0.1"
    assert pixel["td_ua"] == report["userAgent"]

    # fetchPersonalization: the offer for a gold member looking at shoes, decided on the
    # profile the same request updated; the event is stored like any other.
    assert results["offers"] == {
        "offers": {
            "shoes_for_gold": {
                "attributes": {"category": "shoes"},
                "batch_segments": [{"id": "777"}],
            }
        }
    }, context
    viewed = server.wait_for(
        "SELECT td_client_id, td_global_id, product_category FROM test_db.p13n_views",
        lambda rows: len(rows) == 1,
        timeout=60,
    )
    assert viewed == [
        {"td_client_id": p.client_id, "td_global_id": global_id, "product_category": "shoes"}
    ]
    # fetchUserSegments: one answer per token, in order — by the key the page sent, and
    # by the global id the browser's cookie carried (sent because of credentials).
    assert results["segments"] == [
        {
            "key": {"td_client_id": p.client_id},
            "values": ["777"],
            "attributes": {"last_category": "shoes", "tier": "gold"},
            "audienceId": p.instance_id,
        },
        {
            "key": {"td_global_id": global_id},
            "values": [],
            "attributes": {"last_category": "shoes"},
            "audienceId": p.instance_id,
        },
    ], context
    lookups = [r for r in report["requests"] if "/cdp/lookup/collect/segments" in r["url"]]
    assert len(lookups) == 1, context
    assert lookups[0]["status"] == 200

    # fetchServerCookie: a credentialed GET to /get_cookie_id on the records door, whose
    # answer sets _td_ssc_id on the page's host; the SDK then reads it from that cookie
    # without asking again, and removeServerCookie deletes it.
    ssc = results["serverCookie"]
    assert UUID.fullmatch(ssc), context
    assert results["serverCookieCached"] == ssc, context
    assert results["serverCookieAfterRemove"] is None, context
    asked = [r for r in report["requests"] if "/get_cookie_id?" in r["url"]]
    assert [(r["url"].split("?")[0], r["status"]) for r in asked] == [
        (f"{records_origin}get_cookie_id", 200)
    ], context
    assert "cookie_domain=127.0.0.1&" in asked[0]["url"]

    # addConsentRecord, sent while events are blocked: the record as given, no SDK columns.
    assert results["consent"] == {"receipts": [{"success": True}]}, context
    consent = server.wait_for(
        "SELECT * FROM test_db.consents", lambda rows: len(rows) == 1, timeout=60
    )[0]
    assert (consent["purpose"], consent["status"], consent["consent_id"]) == (
        "analytics",
        "given",
        "c-1",
    )
    assert not set(consent) & SDK_COLUMNS, consent

    # A link click under trackClicks: a keepalive fetch with credentials (the server's
    # global id cookie went along and filled td_global_id), answered and readable.
    click = report["click"]
    assert click.get("status") == 200, context
    assert f"_tdedge_global_id={global_id}" in click["requestHeaders"].get("cookie", ""), context
    assert click["requestHeaders"]["authorization"] == f"TD1 {server.write_key}"
    assert not [line for line in report["console"] if "CORS" in line], context
    clicked = server.wait_for(
        "SELECT * FROM test_db.clicks", lambda rows: len(rows) == 1, timeout=60
    )[0]
    assert set(clicked) >= SDK_COLUMNS, clicked
    assert (clicked["tag"], clicked["id"], clicked["href"], clicked["title"]) == (
        "a",
        "promo",
        "#spring-sale",
        "Spring sale",
    )
    assert clicked["td_global_id"] == global_id
    assert clicked["td_client_id"] == events["td_client_id"]
    assert server.errors() == []
