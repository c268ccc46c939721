"""The legacy Postback API through the real server (spec/postback-api-legacy.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec

from tests.e2e.conftest import Server, wait_readyz

PATH = "/postback/v3/event/test_db/test_tbl"


def test_documented_curl_example(server: Server) -> None:
    """The document's own curl command, byte for byte, against tdedge."""
    done = subprocess.run(
        [
            "curl",
            "-s",
            "-D",
            "-",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"X-TD-Write-Key: {server.write_key}",
            "--data-binary",
            '{"param1":"value1", "param2":1234}',
            f"{server.url}{PATH}",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    head, _, body = done.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK")
    assert "content-type: application/json" in head.lower()
    assert "content-length: 2" in head.lower()
    assert body == "{}"
    before = int(time.time())
    rows = server.wait_for("SELECT * FROM test_tbl", lambda r: len(r) == 1, database="test_db")
    assert rows[0]["param1"] == "value1"
    assert rows[0]["param2"] == 1234
    assert isinstance(rows[0]["time"], int)
    assert before - 5 <= rows[0]["time"] <= int(time.time()) + 1


def test_key_in_url_parameter(server: Server) -> None:
    key = urllib.parse.quote(server.write_key, safe="")
    r = httpx.post(f"{server.url}{PATH}?td_write_key={key}", json={"via": "url"})
    assert r.status_code == 200
    assert r.json() == {}
    server.wait_for("SELECT via FROM test_db.test_tbl", lambda rows: rows == [{"via": "url"}])


def test_header_takes_precedence_over_url_parameter(server: Server) -> None:
    good = urllib.parse.quote(server.write_key, safe="")
    bad = urllib.parse.quote("1/0000000000000000000000000000000000000000", safe="")
    # Header valid, URL invalid: the header wins, the record lands.
    r1 = server.postback(
        "test_db",
        "test_tbl",
        {"case": "header_good"},
        key=server.write_key,
        params={"td_write_key": "1/0000000000000000000000000000000000000000"},
    )
    # Header invalid, URL valid: the header still wins, the record is refused.
    r2 = httpx.post(
        f"{server.url}{PATH}?td_write_key={good}",
        json={"case": "header_bad"},
        headers={"X-TD-Write-Key": urllib.parse.unquote(bad)},
    )
    assert (r1.status_code, r2.status_code) == (200, 200)
    server.wait_for(
        'SELECT "case" FROM test_db.test_tbl', lambda rows: rows == [{"case": "header_good"}]
    )
    errs = server.wait_errors(lambda e: any('"header_bad"' in x["record"] for x in e))
    refused = [e for e in errs if '"header_bad"' in e["record"]]
    assert refused[0]["reason"] == "unknown_key"


def test_invalid_key_goes_to_import_errors_not_the_table(server: Server) -> None:
    r = server.postback("test_db", "test_tbl", {"who": "good"}, key=server.write_key)
    r_bad = server.postback("test_db", "test_tbl", {"who": "bad"}, key="1/not-a-real-key")
    assert (r.status_code, r_bad.status_code) == (200, 200)  # as Treasure Data: checked later
    server.wait_for("SELECT who FROM test_db.test_tbl", lambda rows: rows == [{"who": "good"}])
    errs = server.wait_errors(lambda e: len(e) >= 1)
    assert [(e["reason"], e["database_name"], e["table_name"]) for e in errs] == [
        ("unknown_key", "test_db", "test_tbl")
    ]
    assert '"bad"' in errs[0]["record"]
    # The secret itself is never stored: only a key id derived from its hash.
    assert "not-a-real-key" not in str(errs)
    # The table did not get the refused record later either.
    assert server.query("SELECT who FROM test_db.test_tbl") == [{"who": "good"}]


def test_revoked_key_and_foreign_account(server: Server) -> None:
    before = {k["key_id"] for k in _keys(server)}
    victim = server.cli("keys", "create", "--type", "write").stdout.strip()
    (key_id,) = {k["key_id"] for k in _keys(server)} - before
    server.cli("keys", "revoke", key_id)
    assert [k["revoked"] for k in _keys(server) if k["key_id"] == key_id] == [True]
    other = server.cli("keys", "create", "--account", "2", "--type", "write").stdout.strip()
    assert other.startswith("2/")
    server.cli("db", "create", "owned_db")
    assert server.postback("owned_db", "t", {"n": 1}, key=victim).status_code == 200
    assert server.postback("owned_db", "t", {"n": 2}, key=other).status_code == 200
    assert server.postback("owned_db", "t", {"n": 3}, key=server.write_key).status_code == 200
    server.wait_for("SELECT n FROM owned_db.t", lambda rows: rows == [{"n": 3}])
    errs = server.wait_errors(lambda e: {"revoked_key", "foreign_key"} <= {x["reason"] for x in e})
    assert {e["reason"] for e in errs if e["database_name"] == "owned_db"} == {
        "revoked_key",
        "foreign_key",
    }


def test_write_key_cannot_create_a_database_master_key_can(server: Server) -> None:
    server.postback("newdb_w", "t", {"x": 1}, key=server.write_key)
    server.postback("newdb_m", "t", {"x": 2}, key=server.master_key)
    server.wait_for("SELECT x FROM newdb_m.t", lambda rows: rows == [{"x": 2}])
    errs = server.wait_errors(lambda e: any(x["database_name"] == "newdb_w" for x in e))
    assert [e["reason"] for e in errs if e["database_name"] == "newdb_w"] == ["database_not_found"]
    dbs = [d["name"] for d in _json(server.cli("db", "list", "--format", "json").stdout)]
    assert "newdb_m" in dbs and "newdb_w" not in dbs


def test_form_urlencoded_body_is_a_record_of_strings(server: Server) -> None:
    r = httpx.post(
        f"{server.url}{PATH}",
        content=b"a=1&b=hello+world&c=",
        headers={
            "X-TD-Write-Key": server.write_key,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.status_code == 200
    rows = server.wait_for("SELECT a, b, c FROM test_db.test_tbl", lambda rows: len(rows) == 1)
    assert rows == [{"a": "1", "b": "hello world", "c": ""}]


def test_record_time_is_kept_when_valid(server: Server) -> None:
    server.postback("test_db", "test_tbl", {"k": "own", "time": 1448344701}, key=server.write_key)
    server.postback("test_db", "test_tbl", {"k": "bad", "time": "yesterday"}, key=server.write_key)
    rows = server.wait_for(
        "SELECT k, time FROM test_db.test_tbl ORDER BY k", lambda rows: len(rows) == 2
    )
    assert rows[1] == {"k": "own", "time": 1448344701}
    assert abs(rows[0]["time"] - time.time()) < 60


# Errors at the door.
def test_invalid_names_are_400_naming_the_rule(server: Server) -> None:
    for path in (
        "/postback/v3/event/test-db/t",
        "/postback/v3/event/db/t.x",
        "/postback/v3/event/db/",
        "/postback/v3/event/db/t/extra",
    ):
        r = httpx.post(
            server.url + path, json={"a": 1}, headers={"X-TD-Write-Key": server.write_key}
        )
        assert r.status_code == 400, path
        assert r.json()["error"] == "invalid_name"
        assert "letters, digits and _" in r.json()["message"]
    # Each refusal left its row, with the names as sent.
    rows = server.wait_errors(
        lambda rows: sum(row["reason"] == "invalid_name" for row in rows) >= 4
    )
    named = {(row["database_name"], row["table_name"]) for row in rows}
    assert ("test-db", "t") in named and ("db", "t.x") in named


def test_bad_bodies_are_400_with_a_reason(server: Server) -> None:
    cases = [
        (b"", "empty_body"),
        (b"   ", "empty_body"),
        (b"{not json", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"42", "not_an_object"),
    ]
    for body, code in cases:
        r = httpx.post(
            f"{server.url}{PATH}",
            content=body,
            headers={"X-TD-Write-Key": server.write_key, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, body
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == code, body
        assert r.json()["message"]
    # Refused records still leave a trace for operators.
    errs = server.wait_errors(lambda e: len(e) >= len(cases))
    assert sorted(e["reason"] for e in errs) == sorted(c for _, c in cases)


def test_missing_key_is_403(server: Server) -> None:
    r = server.postback("test_db", "test_tbl", {"a": 1})
    assert r.status_code == 403
    assert r.json()["error"] == "missing_key"
    r = httpx.post(f"{server.url}{PATH}?td_write_key=", json={"a": 1})
    assert r.status_code == 403


def test_body_over_the_cap_is_413(make_server: Any) -> None:
    srv: Server = make_server(["--max-body-bytes", "1000"])
    headers = {"X-TD-Write-Key": srv.write_key, "Content-Type": "application/json"}
    fits = b'{"p":"' + b"x" * (1000 - 8) + b'"}'
    assert len(fits) == 1000
    assert httpx.post(f"{srv.url}{PATH}", content=fits, headers=headers).status_code == 200
    over = b'{"p":"' + b"x" * (1000 - 7) + b'"}'
    r = httpx.post(f"{srv.url}{PATH}", content=over, headers=headers)
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"

    def chunks(body: bytes) -> Iterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    # Chunked (no Content-Length): counted while streaming.
    assert httpx.post(f"{srv.url}{PATH}", content=chunks(fits), headers=headers).status_code == 200
    assert httpx.post(f"{srv.url}{PATH}", content=chunks(over), headers=headers).status_code == 413


def test_wrong_method_and_unknown_path(server: Server) -> None:
    r = httpx.get(f"{server.url}{PATH}")
    assert r.status_code == 405
    assert httpx.post(f"{server.url}/nope", json={}).status_code == 404


def test_sync_auth_answers_403_at_once(make_server: Any) -> None:
    srv: Server = make_server(["--auth", "sync"])
    r = srv.postback("test_db", "test_tbl", {"a": 1}, key="1/0123456789abcdef")
    assert r.status_code == 403
    assert r.json()["error"] == "unknown_key"
    fresh = srv.cli("keys", "create").stdout.strip()  # a key made now is seen at once
    assert srv.postback("test_db", "test_tbl", {"a": 2}, key=fresh).status_code == 200
    assert srv.postback("test_db", "test_tbl", {"a": 3}, key=srv.master_key).status_code == 200
    srv.wait_for(
        "SELECT a FROM test_db.test_tbl ORDER BY a", lambda rows: rows == [{"a": 2}, {"a": 3}]
    )
    errs = srv.wait_errors(lambda e: len(e) >= 1)
    assert [e["reason"] for e in errs] == ["unknown_key"]


def test_sync_auth_refuses_a_write_key_on_a_missing_database_on_every_door(
    make_server: Any,
) -> None:
    """One answer (control/access.py): the edge checks what it can, on every door."""
    srv: Server = make_server(["--auth", "sync"])
    key = srv.write_key
    body = msgspec.json.encode({"a": 1})
    records_host = {"Host": "us01.records.in.tdedge.test"}
    answers = {
        "legacy": srv.postback("nosuch_db", "t", {"a": 1}, key=key),
        "records postback": httpx.post(
            f"{srv.url}/postback/v3/event/nosuch_db/t",
            content=body,
            headers={**records_host, "Content-Type": "application/json", "X-TD-Write-Key": key},
        ),
        "ingest": httpx.post(
            f"{srv.url}/nosuch_db/t",
            content=msgspec.json.encode({"events": [{"a": 1}]}),
            headers={
                **records_host,
                "Content-Type": "application/vnd.treasuredata.v1+json",
                "Authorization": f"TD1 {key}",
            },
        ),
    }
    for door, r in answers.items():
        assert (r.status_code, r.json()["error"]) == (403, "database_not_found"), door
    # The pixel answers its GIF whatever happens; the refusal is an import error at once.
    r = httpx.get(
        f"{srv.url}/postback/v3/event/nosuch_db/px",
        params={"td_format": "pixel", "td_write_key": key, "a": "1"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    errs = srv.wait_errors(lambda e: len(e) >= 4)
    assert {e["reason"] for e in errs} == {"database_not_found"}
    assert {e["door"] for e in errs} >= {"legacy", "records", "pixel"}
    # A master key creates the database by writing to it, as td-js-sdk documents.
    assert srv.postback("nosuch_db", "t", {"a": 2}, key=srv.master_key).status_code == 200
    srv.wait_for("SELECT a FROM nosuch_db.t", lambda rows: rows == [{"a": 2}])


def test_health_ready_and_metrics(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    server.postback("test_db", "test_tbl", {"a": 1}, key=server.write_key)
    server.postback("test_db", "test_tbl", {"a": 1}, key="1/bad")
    server.wait_for("SELECT count(*) AS n FROM test_db.test_tbl", lambda r: r == [{"n": 1}])
    server.wait_errors(lambda e: len(e) == 1)
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if 'tdedge_rejections_total{reason="unknown_key"} 1.0' in text:
            break
        time.sleep(0.2)
    assert 'tdedge_requests_total{door="legacy",route="postback",status="200"} 2.0' in text
    assert 'tdedge_rejections_total{reason="unknown_key"} 1.0' in text
    assert "tdedge_rows_written_total 1.0" in text
    assert "tdedge_journal_commit_batch_size_count" in text
    assert "tdedge_loader_lag_seconds" in text


def test_readyz_reports_a_job_runner_that_stopped_beating(server: Server) -> None:
    ready = wait_readyz(server, lambda b: b["status"] == 200)
    assert ready["status"] == 200 and ready["jobs"]["pid"] > 0
    runner = int(ready["jobs"]["pid"])
    os.kill(runner, signal.SIGSTOP)  # hung: alive, but its loop does not turn
    try:
        stalled = wait_readyz(server, lambda b: b["status"] == 503)
    finally:
        os.kill(runner, signal.SIGCONT)
    assert stalled["status"] == 503
    assert [p for p in stalled["problems"] if p.startswith("job runner silent for")]
    again = wait_readyz(server, lambda b: b["status"] == 200)
    assert again["status"] == 200 and again["jobs"]["pid"] == runner


def test_backlog_over_bound_is_503_with_retry_after(make_server: Any) -> None:
    srv: Server = make_server(["--no-loader", "--journal-max-backlog", "3"])
    codes = [
        srv.postback("test_db", "t", {"i": i}, key=srv.write_key).status_code for i in range(3)
    ]
    assert codes == [200, 200, 200]
    deadline = time.monotonic() + 5
    r = srv.postback("test_db", "t", {"i": 3}, key=srv.write_key)
    while r.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        r = srv.postback("test_db", "t", {"i": 4}, key=srv.write_key)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["error"] == "journal_unavailable"
    assert httpx.get(f"{srv.url}/readyz").status_code == 503


def _json(text: str) -> Any:
    import msgspec

    return msgspec.json.decode(text)


def _keys(server: Server) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = _json(server.cli("keys", "list", "--format", "json").stdout)
    return rows
