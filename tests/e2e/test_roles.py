"""What a node runs (``serve --roles``): a role that runs once per data dir, started by
hand while ``serve`` runs, says who holds the data dir and waits visibly, and a signal
stops it (lifecycle.py); serves of different roles share a data dir."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.e2e.conftest import Server, free_port, wait_readyz
from tests.e2e.restapi_support import start_api_server, td1, wait_job
from tests.e2e.test_restapi import issue

STOPPED_WITHIN_S = 10.0


@pytest.mark.parametrize(("command", "role"), [("loader", "loader"), ("jobs", "jobs")])
def test_a_second_role_waits_visibly_and_stops_on_a_signal(
    server: Server, tmp_path: Path, command: str, role: str
) -> None:
    # serve's own loader and job runner hold the data dir first.
    wait_readyz(server, lambda body: body["status"] == 200, timeout=60)
    for sig in (signal.SIGTERM, signal.SIGINT):  # a service manager's stop, Ctrl-C
        log = tmp_path / f"{command}-{sig.name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tdedge", command, "--data-dir", str(server.data_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while f"another {role} runs on this data dir" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert '"holder_pid"' in log.read_text()
            proc.send_signal(sig)
            assert proc.wait(timeout=STOPPED_WITHIN_S) == 0, (sig.name, log.read_text())
            assert "Traceback" not in log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # serve's own loader and job runner carry on.
    assert server.postback("test_db", "after", {"a": 1}, key=server.write_key).status_code == 200
    server.wait_for("SELECT a FROM test_db.after", lambda rows: rows == [{"a": 1}])


def test_an_edge_only_node_journals_and_leaves_loading_and_jobs_to_other_nodes(
    make_server: Any, tmp_path: Path
) -> None:
    """serve --roles edge answers records and queues jobs; a loader-only serve on the
    same data dir loads what it journaled, and the job waits for a serve that runs jobs."""
    edge, api = start_api_server(make_server, "--roles", "edge")
    ready = wait_readyz(edge, lambda b: b["status"] == 200, url=api)
    assert ready["roles"] == ["edge"] and ready["loader"] is None  # no loader asked for
    assert edge.postback("test_db", "t", {"a": 1}, key=edge.write_key).status_code == 200
    loader, runner = (Server(edge.data_dir, ["--roles", r]) for r in ("loader", "jobs"))
    for node in (loader, runner):
        node.master_key, node.write_key = edge.master_key, edge.write_key
    try:
        loader.start(timeout=60)
        edge.wait_for("SELECT a FROM test_db.t", lambda rows: rows == [{"a": 1}], timeout=60)
        health = wait_readyz(loader, lambda b: b["status"] == 200)
        assert health["roles"] == ["loader"] and health["loader"]["lag_records"] == 0
        assert httpx.get(f"{loader.url}/v3/job/status/1").json()["error"] == "no_edge"
        # A role that runs already on the data dir is refused, naming who runs it.
        twice = edge.cli("serve", "--port", str(free_port()), "--roles", "loader,jobs", check=False)
        assert twice.returncode == 1
        assert f"(pid {loader.proc.pid if loader.proc else 0}) runs the loader role" in twice.stderr

        job = issue(api, edge.master_key, "SELECT a FROM t")
        time.sleep(2)  # no node runs jobs: it stays queued
        state = httpx.get(f"{api}/v3/job/status/{job}", headers=td1(edge.master_key)).json()
        assert state["status"] == "queued"
        runner.start(timeout=60)
        assert wait_job(api, edge.master_key, job)["status"] == "success"
        status = msgspec.json.decode(edge.cli("status", "--json").stdout)
        assert [s["roles"] for s in status["serves"]] == [["edge"], ["loader"], ["jobs"]]
    finally:
        runner.kill()
        loader.kill()
