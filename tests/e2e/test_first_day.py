"""What an operator meets on a first day: the lines serve prints work as pasted, a second
serve is refused, ``tdedge status``, one JSON log format, the access log, refusals that
keep what the client sent and was told, and a clean Ctrl-C.

One server for the module, started as an operator does: the venv's ``tdedge`` script,
with the venv's bin directory not on the PATH. Its last test stops it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.e2e.conftest import Server, free_port, wait_healthy
from tests.e2e.restapi_support import td1, wait_job

SCRIPT = Path(sys.executable).parent / "tdedge"
BARE_PATH = "/usr/bin:/bin"
RECORDS_HOST = {"Host": "us01.records.in.treasuredata.com"}
INGEST = "application/vnd.treasuredata.v1+json"


class FirstDay(Server):
    """serve through the console script, stdout and stderr apart (stderr: the log)."""

    def __init__(self, data_dir: Path, extra: list[str]) -> None:
        super().__init__(data_dir, extra)
        self.tdedge = [str(SCRIPT)]
        self.out = data_dir.parent / "serve.out"
        self.err = data_dir.parent / "serve.err"

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PATH": BARE_PATH}
        cmd = [*self.tdedge, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(  # type: ignore[assignment]
                [*cmd, *self.extra], stdout=out, stderr=err, env=env, start_new_session=True
            )
        wait_healthy(self.url, timeout)
        text = self.out.read_text()
        self.master_key = re.search(r"master key: (\S+)", text).group(1)  # type: ignore[union-attr]
        self.write_key = re.search(r"write key:\s+(\S+)", text).group(1)  # type: ignore[union-attr]

    def log_lines(self) -> list[str]:
        return [line for line in self.err.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FirstDay, str]]:
    api_port = free_port()
    srv = FirstDay(
        tmp_path_factory.mktemp("first-day") / "data",
        ["--api-port", str(api_port), "--access-log"],
    )
    srv.start()
    api = f"http://127.0.0.1:{api_port}"
    wait_healthy(api)
    try:
        yield srv, api
    finally:
        srv.kill()


def test_the_printed_lines_work_as_pasted(day: tuple[FirstDay, str]) -> None:
    srv, _ = day
    text = srv.out.read_text()
    curl, query = text.split("Try it:\n", 1)[1].strip().rsplit("\n", 1)

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", command.strip()],
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": BARE_PATH},
            cwd="/",  # not where serve was started
            timeout=120,
        )

    assert sh(curl).returncode == 0
    deadline = time.monotonic() + 60
    while True:
        done = sh(query)
        if done.returncode == 0 and "value1" in done.stdout:
            break
        assert time.monotonic() < deadline, (query, done.stdout, done.stderr)
        time.sleep(0.5)


def test_a_second_serve_on_the_data_dir_or_the_port_is_refused(
    day: tuple[FirstDay, str], tmp_path: Path
) -> None:
    srv, _ = day
    assert srv.proc is not None
    same_dir = subprocess.run(
        [*srv.tdedge, "serve", "--data-dir", str(srv.data_dir), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert same_dir.returncode != 0
    assert f"pid {srv.proc.pid}" in same_dir.stderr, same_dir.stderr
    other = tmp_path / "other"
    same_port = subprocess.run(
        [*srv.tdedge, "serve", "--data-dir", str(other), "--port", str(srv.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert same_port.returncode != 0
    assert f"{srv.port} is in use by pid" in same_port.stderr, same_port.stderr
    assert not other.exists()  # a serve that cannot start makes no data dir
    # The first one still answers every request.
    for _ in range(20):
        assert srv.postback("test_db", "still", {"a": 1}, key=srv.write_key).status_code == 200


def test_status_says_what_runs(day: tuple[FirstDay, str]) -> None:
    srv, _ = day
    assert srv.proc is not None
    done = srv.cli("status", "--json")
    report = msgspec.json.decode(done.stdout)
    assert report["running"] is True
    assert report["pid"] == srv.proc.pid
    assert report["ports"]["main"] == srv.port and "api" in report["ports"]
    assert {"loader", "jobs"} <= set(report["roles"])
    assert report["version"]
    text = srv.cli("status").stdout
    assert f"pid:             {srv.proc.pid}" in text
    assert re.search(r"journal backlog: \d+ records", text), text
    assert re.search(r"loader lag:      [\d.]+ s \(last beat", text), text

    # A refusal is the last error, with its reason, door and table.
    assert srv.postback("test_db", "statused", [1], key=srv.write_key).status_code == 400
    deadline = time.monotonic() + 30
    while "not_an_object on legacy test_db.statused" not in (text := srv.cli("status").stdout):
        assert time.monotonic() < deadline, text
        time.sleep(0.3)
    error = msgspec.json.decode(srv.cli("status", "--json").stdout)["last_error"]
    assert (error["reason"], error["door"], error["table"]) == (
        "not_an_object",
        "legacy",
        "test_db.statused",
    )


def test_status_without_a_loader_reads_the_backlog_from_the_journal(make_server: Any) -> None:
    srv = make_server(["--no-loader"])
    for i in range(5):
        assert srv.postback("test_db", "waiting", {"i": i}, key=srv.write_key).status_code == 200
    time.sleep(1.1)  # the oldest has waited a second
    report = msgspec.json.decode(srv.cli("status", "--json").stdout)
    assert report["journal_backlog"] >= 5, report
    assert report["loader"]["pid"] is None and report["loader"]["lag_seconds"] >= 1, report
    text = srv.cli("status").stdout
    found = re.search(r"journal backlog: (\d+) records", text)
    assert found and int(found.group(1)) == report["journal_backlog"], text
    assert "no loader has beaten" in text, text


def test_refusals_keep_what_was_sent_and_what_the_client_was_told(
    day: tuple[FirstDay, str],
) -> None:
    srv, _ = day
    legacy = f"{srv.url}/postback/v3/event/test_db/refused"
    key = {"X-TD-Write-Key": srv.write_key, "Content-Type": "application/json"}
    ingest = {**RECORDS_HOST, "Authorization": f"TD1 {srv.write_key}", "Content-Type": INGEST}
    big = b'{"pad":"' + b"x" * (2 << 20) + b'"}'
    sends = [
        (legacy, key, b'{"a":'),
        (legacy, key, b"[1,2]"),
        (legacy, key, big),
        (f"{srv.url}/postback/v3/event/my-db/events", key, b'{"a":1}'),
        (f"{srv.url}/test_db/refused", ingest, b'{"events":5}'),
        (f"{srv.url}/test_db/refused", ingest, b'{"events":[]}'),
        (f"{srv.url}/test_db/refused", {**ingest, "Content-Encoding": "gzip"}, b"not gzip"),
    ]
    told: dict[str, str] = {}
    for url, headers, body in sends:
        r = httpx.post(url, content=body, headers=headers)
        assert 400 <= r.status_code < 500, r.text
        told[r.json()["error"]] = r.json()["message"]
    assert set(told) == {
        "invalid_json",
        "not_an_object",
        "body_too_large",
        "invalid_name",
        "invalid_body",
        "no_events",
        "invalid_gzip",
    }
    rows = srv.wait_errors(lambda e: set(told) <= {row["reason"] for row in e})
    for reason, message in told.items():
        row = next(r for r in rows if r["reason"] == reason)
        assert row["record"], reason
        assert row["detail"] == message, reason
    too_large = next(r for r in rows if r["reason"] == "body_too_large")
    assert len(too_large["record"]) == 64 * 1024  # its first 64 KiB


def test_main_port_404_for_a_records_path_says_where_the_door_is(
    day: tuple[FirstDay, str],
) -> None:
    srv, _ = day
    r = httpx.post(f"{srv.url}/mydb/t", json={"a": 1})
    assert r.status_code == 404
    message = r.json()["message"]
    assert "records" in message and "/postback/v3/event/mydb/t" in message


def test_a_job_on_a_misspelled_column_says_it_does_not_exist(day: tuple[FirstDay, str]) -> None:
    srv, api = day
    assert srv.postback("test_db", "cols", {"a": 1}, key=srv.write_key).status_code == 200
    srv.wait_for("SELECT count(*) AS n FROM cols", lambda r: r[0]["n"] == 1, database="test_db")
    r = httpx.post(
        f"{api}/v3/job/issue/presto/test_db",
        data={"query": "SELECT nosuch FROM cols"},
        headers=td1(srv.master_key),
    )
    job = r.json()["job_id"]
    assert wait_job(api, srv.master_key, job)["status"] == "error"
    shown = httpx.get(f"{api}/v3/job/show/{job}", headers=td1(srv.master_key)).json()
    error = shown["debug"]["stderr"]
    assert "Column 'nosuch' cannot be resolved" in error
    assert "before it is defined" not in error


def test_every_log_line_is_json_and_requests_are_in_the_access_log(
    day: tuple[FirstDay, str],
) -> None:
    srv, _ = day
    httpx.get(f"{srv.url}/postback/v3/event/test_db/t?td_write_key=1/secret&td_format=pixel")
    deadline = time.monotonic() + 10
    access: list[dict[str, Any]] = []
    # The line is written once the answer is sent: the client may read the log first.
    while time.monotonic() < deadline and not access:
        lines = [msgspec.json.decode(line) for line in srv.log_lines()]
        access = [
            x
            for x in lines
            if x["logger"] == "tdedge.access" and x["path"] == "/postback/v3/event/test_db/t"
        ]
        time.sleep(0.2)
    assert any(line["logger"] == "granian" for line in lines)  # granian's lines too
    (line,) = access
    assert (line["method"], line["door"], line["route"]) == ("GET", "legacy", "postback")
    assert "secret" not in srv.err.read_text()  # the query string is never logged


def test_the_access_log_counts_the_requests_it_leaves_out(make_server: Any) -> None:
    srv = make_server(["--access-log", "--access-log-rate", "1"])
    with httpx.Client() as client:
        for _ in range(20):
            assert client.get(f"{srv.url}/healthz").status_code == 200
        time.sleep(1.5)  # the budget fills again: the next line says what was left out
        assert client.get(f"{srv.url}/healthz").status_code == 200
    deadline = time.monotonic() + 10
    skipped = 0
    while skipped < 15 and time.monotonic() < deadline:
        time.sleep(0.2)
        lines = [msgspec.json.decode(x) for x in srv.log.read_text().splitlines() if x[:1] == "{"]
        skipped = sum(x.get("skipped", 0) for x in lines if x["logger"] == "tdedge.access")
    assert skipped >= 15, srv.log.read_text()


def test_ctrl_c_stops_cleanly_and_status_then_says_none_runs(day: tuple[FirstDay, str]) -> None:
    srv, _ = day
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    srv.proc.wait(timeout=60)
    time.sleep(3)  # the supervisor's threads log last
    lines = [msgspec.json.decode(line) for line in srv.log_lines()]
    assert not [x for x in lines if x["level"] in ("error", "critical")], lines
    done = srv.cli("status", check=False)
    assert done.returncode == 1
    assert "no tdedge serve runs" in done.stdout


READ_ONLY = [
    ["query", "SELECT 1"],
    ["errors"],
    ["keys", "list"],
    ["db", "list"],
    ["status"],
    ["p13n", "show"],
    ["p13n", "tokens", "list"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a) for a in READ_ONLY])
def test_a_read_only_command_where_there_is_no_data_dir_says_so(
    args: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TDEDGE_DATA_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "tdedge", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"no tdedge data dir at {tmp_path / 'tdedge-data'}" in done.stderr, done.stderr
    assert not (tmp_path / "tdedge-data").exists()


def test_an_unknown_log_level_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *[sys.executable, "-m", "tdedge", "serve", "--data-dir", str(tmp_path / "d")],
            *["--port", str(free_port()), "--log-level", "bogus"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Invalid value for '--log-level'" in done.stderr
    assert "Traceback" not in done.stderr
