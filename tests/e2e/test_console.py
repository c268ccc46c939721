"""The live console's JSON (``/console/api/…`` on the REST API's door) and ``tdedge
tail``: rows and import errors as they are committed, each account its own only."""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.e2e.restapi_support import start_api_server, td1, wait_job


def console(endpoint: str, key: str, what: str, **params: Any) -> dict[str, Any]:
    r = httpx.get(f"{endpoint}/console/api/{what}", params=params, headers=td1(key), timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def events_until(
    endpoint: str, key: str, until: Any, timeout: float = 60, **params: Any
) -> list[dict[str, Any]]:
    """Events from the first answer on, polled with the cursor, until ``until(events)``."""
    seen: list[dict[str, Any]] = []
    cursor: int | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = dict(params, **({"after": cursor} if cursor is not None else {}))
        answer = console(endpoint, key, "events", **query)
        seen += answer["events"]
        cursor = answer["cursor"]
        if until(seen):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"events never matched; saw {seen}")


def test_console_streams_the_accounts_own_rows_and_errors(make_server: Any) -> None:
    srv, endpoint = start_api_server(make_server)
    other = srv.cli("keys", "create", "--account", "2", "--type", "master").stdout.strip()
    r = httpx.post(f"{endpoint}/v3/database/create/other_db", headers=td1(other))
    assert r.status_code == 200, r.text

    page = httpx.get(f"{endpoint}/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{endpoint}/console/api/status").status_code == 401
    r = httpx.get(f"{endpoint}/console/api/status", headers=td1(srv.write_key))
    assert r.status_code == 403

    for i in range(3):
        assert srv.postback("test_db", "mine", {"i": i}, key=srv.write_key).status_code == 200
    assert srv.postback("other_db", "theirs", {"j": 1}, key=other).status_code == 200
    bad = srv.postback("test_db", "mine", [1, 2], key=srv.write_key)
    assert bad.status_code == 400

    def complete(events: list[dict[str, Any]]) -> bool:
        rows = [e for e in events if e["reason"] is None]
        errors = [e for e in events if e["reason"] is not None]
        return len(rows) == 3 and len(errors) == 1

    events = events_until(endpoint, srv.master_key, complete)
    rows = [e for e in events if e["reason"] is None]
    assert sorted(e["record"]["i"] for e in rows) == [0, 1, 2]
    assert {(e["database"], e["table"]) for e in events} == {("test_db", "mine")}
    (error,) = [e for e in events if e["reason"] is not None]
    assert (error["reason"], error["door"], error["record"]) == ("not_an_object", "legacy", [1, 2])

    # The other account sees its own row, and nothing of account 1.
    theirs = events_until(endpoint, other, lambda ev: len(ev) >= 1)
    assert [(e["database"], e["table"], e["record"]["j"]) for e in theirs] == [
        ("other_db", "theirs", 1)
    ]
    # Filters: a table with nothing.
    answer = console(endpoint, srv.master_key, "events", table="nothing")
    assert answer["events"] == []
    assert (
        httpx.get(
            f"{endpoint}/console/api/events", params={"after": "x"}, headers=td1(srv.master_key)
        ).status_code
        == 400
    )

    status = console(endpoint, srv.master_key, "status")
    assert status["databases"] == ["test_db"]
    (mine,) = [t for t in status["tables"] if t["table"] == "mine"]
    assert mine["rows"] == 3 and mine["database"] == "test_db"
    assert mine["last_insert_at"] is not None and abs(mine["last_insert_at"] - time.time()) < 600
    assert status["loader"]["lag_records"] >= 0
    assert [t["table"] for t in console(endpoint, other, "status")["tables"]] == ["theirs"]

    # tdedge tail: the operator's view, every account's.
    done = subprocess.run(
        [sys.executable, "-m", "tdedge", "tail", "--data-dir", str(srv.data_dir), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "test_db.mine  (legacy)  {" in done.stdout
    assert "other_db.theirs  (legacy)  {" in done.stdout
    assert "ERROR not_an_object (legacy)  [1,2]" in done.stdout


def test_console_shows_the_door_of_each_row_and_the_rows_per_door(make_server: Any) -> None:
    srv, endpoint = start_api_server(make_server)
    key = srv.master_key
    for i in range(2):
        assert srv.postback("test_db", "mixed", {"k": str(i)}, key=srv.write_key).status_code == 200
    pixel = {"td_format": "pixel", "td_write_key": srv.write_key, "k": "2"}
    r = httpx.get(f"{srv.url}/postback/v3/event/test_db/mixed", params=pixel, timeout=30)
    assert r.status_code == 200
    events = events_until(endpoint, key, lambda ev: len(ev) >= 3, table="mixed")
    assert sorted((e["record"]["k"], e["door"]) for e in events) == [
        ("0", "legacy"), ("1", "legacy"), ("2", "pixel"),
    ]  # fmt: skip
    # A query job's rows come in by the query door.
    query = "INSERT INTO mixed (k) VALUES ('3')"
    r = httpx.post(
        f"{endpoint}/v3/job/issue/presto/test_db", data={"query": query}, headers=td1(key)
    )
    assert r.status_code == 200, r.text
    assert wait_job(endpoint, key, r.json()["job_id"])["status"] == "success"
    later = events_until(endpoint, key, lambda ev: len(ev) >= 4, table="mixed")
    assert [e["door"] for e in later if e["record"]["k"] == "3"] == ["query"]

    def doors() -> dict[str, int]:
        tables = console(endpoint, key, "status")["tables"]
        return next((t["doors"] for t in tables if t["table"] == "mixed"), {})

    assert doors() == {"legacy": 2, "pixel": 1, "query": 1}
    # A table dropped and made again counts its doors afresh.
    r = httpx.post(f"{endpoint}/v3/table/delete/test_db/mixed", headers=td1(key))
    assert r.status_code == 200, r.text
    assert srv.postback("test_db", "mixed", {"k": "9"}, key=srv.write_key).status_code == 200
    deadline = time.monotonic() + 60
    while doors() != {"legacy": 1} and time.monotonic() < deadline:
        time.sleep(0.3)
    assert doors() == {"legacy": 1}


def test_console_shows_what_waits_when_no_loader_runs(make_server: Any) -> None:
    srv, endpoint = start_api_server(make_server, "--no-loader")
    for i in range(4):
        assert srv.postback("test_db", "held", {"i": i}, key=srv.write_key).status_code == 200
    loader = console(endpoint, srv.master_key, "status")["loader"]
    assert loader["lag_records"] >= 4 and loader["lag_seconds"] >= 0, loader
    assert loader["beat_age_s"] is None, loader


def test_tail_follows_new_commits(server: Server) -> None:
    tail = subprocess.Popen(
        [sys.executable, "-m", "tdedge", "tail", "--data-dir", str(server.data_dir),
         "-t", "followed", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(2)  # started, before the records arrive
        for i in range(3):
            r = server.postback("test_db", "followed", {"n": i}, key=server.write_key)
            assert r.status_code == 200
        assert (
            server.postback("test_db", "other", {"n": 9}, key=server.write_key).status_code == 200
        )
        out = tail.stdout
        assert out is not None
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in out:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        got = [lines.get(timeout=60) for _ in range(3)]
        assert all("test_db.followed  (legacy)  " in line for line in got)
        assert [line.split('"n":')[1][0] for line in got] == ["0", "1", "2"]
    finally:
        tail.terminate()
        tail.wait(timeout=30)
    # -d: one database's rows only.
    r = server.postback("elsewhere", "followed", {"n": 7}, key=server.master_key)
    assert r.status_code == 200
    deadline = time.monotonic() + 60
    while "elsewhere.followed" not in (everything := tail_once(server)):
        assert time.monotonic() < deadline, everything
        time.sleep(0.3)
    assert "test_db.followed  (legacy)  " in everything, everything
    only = tail_once(server, "-d", "elsewhere")
    assert "elsewhere.followed  (legacy)  " in only and "test_db." not in only, only
    only = tail_once(server, "-d", "test_db")
    assert "test_db.followed  (legacy)  " in only and "elsewhere." not in only, only
    # No access log unless asked for.
    assert "tdedge.access" not in server.log.read_text()


def tail_once(srv: Server, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tdedge", "tail", "--data-dir", str(srv.data_dir), "--once", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
CHROMIUM = "/usr/bin/chromium"
# A record whose value is markup: the page must show it as text, never run it.
MARKUP = '<img src=x onerror="window.__injected=true">'


def test_console_page_in_headless_chromium(make_server: Any, tmp_path: Path) -> None:
    missing = [
        what
        for what, ok in [
            (f"{CHROMIUM} (apt-get install chromium)", Path(CHROMIUM).exists()),
            ("tests/browser/node_modules (npm ci)", (BROWSER_DIR / "node_modules").exists()),
            ("node (apt-get install nodejs)", shutil.which("node") is not None),
        ]
        if not ok
    ]
    if missing:
        pytest.fail("scripts/test installs what this test needs; missing: " + ", ".join(missing))
    srv, endpoint = start_api_server(make_server)
    for i in range(5):
        record = {"page": f"/products/{i}", "title": MARKUP if i == 4 else f"product {i}"}
        assert srv.postback("test_db", "pageviews", record, key=srv.write_key).status_code == 200
    assert srv.postback("test_db", "pageviews", [1, 2], key=srv.write_key).status_code == 400
    shot = tmp_path / "console.png"
    done = subprocess.run(
        ["node", str(BROWSER_DIR / "console.mjs"), "--url", f"{endpoint}/console",
         "--key", srv.master_key, "--expect-row", "/products/4",
         "--expect-error", "not_an_object", "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert "error" not in report, report
    assert report["loginShown"] is True
    assert report["failedRequests"] == []
    assert not [m for m in report["console"] if m.startswith(("error", "pageerror"))], report
    assert report["injected"] is False, "a record's markup ran in the page"
    assert [r[1:3] for r in report["events"]] == [["legacy", "test_db.pageviews"]] * 5
    assert any("<img src=x onerror=" in r[3] for r in report["events"])
    (error,) = report["errors"]
    assert error[1:3] == ["legacy", "test_db.pageviews"]
    # The reason, then what the client was told.
    assert error[3].startswith("not_an_object: request body must be one JSON object"), error
    assert error[4] == "[1,2]"
    (table,) = report["tables"]
    assert table[0:2] == ["test_db.pageviews", "5"]
    assert re.fullmatch(r"\d+\.\d", table[2]), table  # rows/s, from two polls
    assert table[-1] == "legacy 5"
    assert "journal backlog" in report["header"]
    assert shot.stat().st_size > 10_000
