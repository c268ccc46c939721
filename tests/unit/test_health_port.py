"""The health port of a node without an edge: probes answer, other paths say why not,
and clients holding connections open do not get a thread each."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tdedge import health_port
from tdedge.config import Settings
from tests.e2e.conftest import free_port


def test_probes_answer_and_idle_connections_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=str(tmp_path), roles=("loader",), port=free_port())
    stopping = threading.Event()
    # serve() installs its stop on SIGTERM, which only the main thread may: keep the
    # handler it gives, and call it at the end as the signal would.
    handlers: dict[int, Callable[..., Any]] = {}
    monkeypatch.setattr(signal, "signal", lambda sig, fn: handlers.__setitem__(sig, fn))
    thread = threading.Thread(target=health_port.serve, args=(settings, stopping), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{settings.port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"{url}/healthz").status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        other = httpx.get(f"{url}/v3/job/status/1")
        assert other.status_code == 404 and other.json()["error"] == "no_edge"
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", settings.port)) for _ in range(64)]
        time.sleep(0.5)
        assert threading.active_count() - before <= health_port.MAX_CONNECTIONS
        for s in idle:
            s.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the port never answered again"
            time.sleep(0.1)
    finally:
        handlers[signal.SIGTERM]()
        thread.join(timeout=10)
    assert stopping.is_set() and not thread.is_alive()
