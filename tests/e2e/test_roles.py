"""A role that runs once per data dir, started by hand while ``serve`` runs: it says who
holds the data dir and waits visibly, and a signal stops it (lifecycle.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, wait_readyz

STOPPED_WITHIN_S = 10.0


@pytest.mark.parametrize(("command", "role"), [("loader", "loader"), ("jobs", "jobs")])
def test_a_second_role_waits_visibly_and_stops_on_a_signal(
    server: Server, tmp_path: Path, command: str, role: str
) -> None:
    # serve's own loader and job runner hold the data dir first.
    wait_readyz(server, lambda body: body["status"] == 200, timeout=60)
    log = tmp_path / f"{command}.log"
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
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOPPED_WITHIN_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # serve's own loader and job runner carry on.
    assert server.postback("test_db", "after", {"a": 1}, key=server.write_key).status_code == 200
    server.wait_for("SELECT a FROM test_db.after", lambda rows: rows == [{"a": 1}])
