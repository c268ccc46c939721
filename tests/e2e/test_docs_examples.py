"""The README's and Getting started's shell examples, run as written against a real
``serve --api-port --p13n-port``: each must succeed, and print what the text block
after it shows, if one does.

Blocks that install, start ``serve`` or run the tests are left out (the test starts the
server itself). The documents' ports become free ones, and the blocks run in a folder
whose ``.venv`` is this environment's and whose ``./tdedge-data`` is the server's, so
that ``.venv/bin/tdedge`` and the default data dir mean what they mean to a reader.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.e2e.conftest import Server, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "docs/getting-started.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"pip install|tdedge serve|scripts/test")
UNIX_TIME = re.compile(r"\b1\d{9}\b")  # a `time` value: the arrival's, never the same


def blocks(document: str) -> list[tuple[str, str | None]]:
    """Each bash block to run, with the text block right after it (its output), if any."""
    fenced = FENCE.findall((ROOT / document).read_text())
    found = []
    for i, (kind, body) in enumerate(fenced):
        if kind == "bash" and not NOT_RUN.search(body):
            after = fenced[i + 1] if i + 1 < len(fenced) else ("", "")
            found.append((body, after[1] if after[0] == "text" else None))
    return found


def shows(output: str, expected: str) -> bool:
    """Every line of ``expected`` is in ``output``, in order, times and padding aside."""
    lines = iter(UNIX_TIME.sub("T", line).rstrip() for line in output.splitlines())
    wanted = [UNIX_TIME.sub("T", line).rstrip() for line in expected.splitlines() if line.strip()]
    return all(any(line == want for line in lines) for want in wanted)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_documents_shell_examples_work_as_written(document: str, tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    ports = {"8080": 0, "8081": free_port(), "8082": free_port()}
    srv = Server(
        tmp_path / "tdedge-data",
        ["--api-port", str(ports["8081"]), "--p13n-port", str(ports["8082"])],
    )
    ports["8080"] = srv.port
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDEDGE_")}
    try:
        srv.start()
        for port in ports.values():
            wait_healthy(f"http://127.0.0.1:{port}")
        examples = blocks(document)
        assert examples, document
        for script, expected in examples:
            for documented, port in ports.items():
                script = script.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{port}")
            if "KEY_ID" in script:
                keys = msgspec.json.decode(srv.cli("keys", "list", "--format", "json").stdout)
                script = script.replace("KEY_ID", keys[-1]["key_id"])

            def run(code: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", code],
                    capture_output=True,
                    text=True,
                    cwd=tmp_path,
                    env=env,
                    timeout=180,
                )

            done = run(script)
            assert done.returncode == 0, (script, done.stdout, done.stderr)
            if expected is None:
                continue
            # A loader slower than the example's sleep: its last command again, a while.
            output, deadline = done.stdout, time.monotonic() + 60
            while not shows(output, expected) and time.monotonic() < deadline:
                time.sleep(1)
                output = done.stdout + run(script.strip().splitlines()[-1]).stdout
            assert shows(output, expected), (script, output, expected)
    finally:
        srv.kill()
