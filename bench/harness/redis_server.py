"""A throw-away Redis server for a bench run, on loopback: append-only, fsynced as asked
(``everysec``, as the docs recommend, or ``always``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from harness.ports import free_port


def start_redis(root: Path, fsync: str = "everysec") -> tuple[subprocess.Popen[bytes], int]:
    """The server's process and port; its files go in ``root`` (made here)."""
    port = free_port()
    root.mkdir()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(root),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            fsync,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while (
        subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
        ).stdout.strip()
        != b"PONG"
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, port
