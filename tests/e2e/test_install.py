"""The install command of the README and docs/getting-started.md in an environment of
its own: ``pip install -e .`` without the dev extras, then ``tdedge serve``.

Every other test runs in the dev environment, whose extras (td-client, pytd and what
they pull in) can hide a runtime dependency the project forgot to declare. numpy was
one: DuckDB registers Python UDFs only with numpy installed, so the query job runner
of a README install died on every start and no query job ever ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import Server, free_port, wait_healthy, wait_readyz
from tests.e2e.restapi_support import td1, wait_job

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_install_serves_ingests_and_runs_query_jobs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr[-4000:]

    api_port = free_port()
    srv = Server(tmp_path / "data", ["--api-port", str(api_port)], python=python)
    srv.start(timeout=60)
    endpoint = f"http://127.0.0.1:{api_port}"
    try:
        # Ready, and the job runner past its start (its sessions on the lake open); the
        # details are on the operators' port, which opens after the main one.
        wait_healthy(endpoint, timeout=60)
        ready = wait_readyz(
            srv, lambda b: b["status"] == 200 and b["jobs"]["serving"], 60, url=endpoint
        )
        assert ready["status"] == 200 and ready["jobs"]["serving"], ready
        assert srv.postback("test_db", "installed", {"n": 1}, key=srv.write_key).status_code == 200
        srv.wait_for("SELECT n FROM installed", lambda rows: rows == [{"n": 1}], "test_db")

        issued = httpx.post(
            f"{endpoint}/v3/job/issue/presto/test_db",
            data={"query": "SELECT n, TD_TIME_FORMAT(time, 'yyyy', 'UTC') AS y FROM installed"},
            headers=td1(srv.master_key),
        )
        assert issued.status_code == 200, issued.text
        job = wait_job(endpoint, srv.master_key, str(issued.json()["job_id"]))
        assert job["status"] == "success", job
        # The runner must not have died and been restarted along the way.
        assert "child exited" not in srv.log.read_text()
    finally:
        srv.stop()
