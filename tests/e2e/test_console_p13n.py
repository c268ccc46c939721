"""p13n decisions on the live console: the account's last decisions over HTTP against
a real server, each with its explain trace on demand; other accounts see none."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import free_port
from tests.e2e.p13n_support import CLIENT, CONFIG, P13n
from tests.e2e.restapi_support import start_api_server, td1
from tests.e2e.test_console import BROWSER_DIR


def decisions(endpoint: str, key: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{endpoint}/console/api/decisions", headers=td1(key), timeout=60)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["decisions"]
    return found


def test_console_lists_decisions_and_explains_them(make_server: Any, tmp_path: Path) -> None:
    port = free_port()
    srv, endpoint = start_api_server(make_server, "--p13n-port", str(port))
    p = P13n(srv, port)
    p.wait_ready()
    srv.cli("db", "create", "retail")
    p.apply(CONFIG, tmp_path)
    p.token("web", "web")
    other = srv.cli("keys", "create", "--account", "2", "--type", "master").stdout.strip()

    r = p.post({"td_client_id": CLIENT, "td_path": "/retail"})
    assert r.status_code == 200, r.text
    assert r.json() == {"offers": {}}
    deadline = time.monotonic() + 30
    found = decisions(endpoint, srv.master_key)
    while not found and time.monotonic() < deadline:
        time.sleep(0.3)
        found = decisions(endpoint, srv.master_key)
    (decision,) = found
    assert decision["service"] == "web"
    assert (decision["database"], decision["table"]) == ("retail", "pageviews")
    assert any(CLIENT in k for k in decision["keys"]), decision["keys"]
    assert decision["offers"] == {}
    assert abs(decision["at"] - time.time()) < 600
    # Another account's master key sees none of them, and cannot explain them.
    assert decisions(endpoint, other) == []
    asked = {"id": decision["id"]}
    r = httpx.get(f"{endpoint}/console/api/decision", params=asked, headers=td1(other))
    assert r.status_code == 404
    assert httpx.get(f"{endpoint}/console/api/decisions").status_code == 401
    r = httpx.get(f"{endpoint}/console/api/decisions", headers=td1(srv.write_key))
    assert r.status_code == 403

    r = httpx.get(
        f"{endpoint}/console/api/decision", params=asked, headers=td1(srv.master_key), timeout=60
    )
    assert r.status_code == 200, r.text
    explained = r.json()
    assert explained["id"] == decision["id"]
    assert explained["profile"]["events"] >= 1
    sections = {s["what"]: s for s in explained["sections"]}
    offer = next(s for w, s in sections.items() if "offer_for_high_loyalty" in w)
    # The profile is not in the segment: the section fails, and says which part failed.
    assert offer["passed"] is False
    assert offer["children"] and any(not c["passed"] for c in offer["children"])
    bad = {"id": "1-x"}
    r = httpx.get(f"{endpoint}/console/api/decision", params=bad, headers=td1(srv.master_key))
    assert r.status_code == 404


def test_console_page_shows_decisions_and_why(make_server: Any, tmp_path: Path) -> None:
    if not (BROWSER_DIR / "node_modules").exists() or shutil.which("node") is None:
        pytest.fail("scripts/test installs what this test needs: node, tests/browser/node_modules")
    port = free_port()
    srv, endpoint = start_api_server(make_server, "--p13n-port", str(port))
    p = P13n(srv, port)
    p.wait_ready()
    srv.cli("db", "create", "retail")
    p.apply(CONFIG, tmp_path)
    p.token("web", "web")
    assert p.post({"td_client_id": CLIENT, "td_path": "/retail"}).status_code == 200
    # The page waits for a row and an import error too.
    assert srv.postback("retail", "seen", {"page": "/retail"}, key=srv.write_key).status_code == 200
    assert srv.postback("retail", "seen", [1], key=srv.write_key).status_code == 400
    done = subprocess.run(
        ["node", str(BROWSER_DIR / "console.mjs"), "--url", f"{endpoint}/console",
         "--key", srv.master_key, "--expect-row", "/retail", "--expect-error", "not_an_object",
         "--expect-decision", CLIENT],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert "error" not in report, report
    assert not [m for m in report["console"] if m.startswith(("error", "pageerror"))], report
    (decision,) = report["decisions"]
    assert decision[1] == "web (retail.pageviews)"
    assert CLIENT in decision[2]
    assert decision[3] == "none"
    assert "FAIL section offer_for_high_loyalty" in report["why"], report["why"]
