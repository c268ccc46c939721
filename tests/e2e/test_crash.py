"""A 200 is durable: kill -9 while clients send, restart, every acknowledged record is
in its table exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx
import msgspec

from tests.e2e.conftest import Server

SENDERS = 4


class Senders:
    """Clients that post records with unique ids and remember which got a 200."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.acked: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(SENDERS)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _send(self, n: int) -> None:
        url = f"{self.server.url}/postback/v3/event/crash_db/events"
        headers = {"X-TD-Write-Key": self.server.master_key, "Content-Type": "application/json"}
        with httpx.Client(timeout=5) as client:
            for i in range(1_000_000):
                if self._stop.is_set():
                    return
                rid = n * 1_000_000 + i
                try:
                    r = client.post(url, content=msgspec.json.encode({"id": rid}), headers=headers)
                except httpx.TransportError:
                    continue  # the server died under us; no 200, no promise
                if r.status_code == 200:
                    with self._lock:
                        self.acked.append(rid)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= count, f"only {len(self.acked)} acknowledged"

    def stop(self) -> list[int]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return list(self.acked)


def assert_exactly_once(server: Server, acked: list[int]) -> None:
    rows = server.wait_for(
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM crash_db.events",
        lambda r: r[0]["n"] >= len(acked),
        timeout=60,
    )
    assert rows[0]["n"] == rows[0]["d"], "a record landed twice"
    ids = {r["id"] for r in server.query("SELECT id FROM crash_db.events")}
    missing = set(acked) - ids
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"


def test_kill_9_of_every_process_loses_no_acknowledged_record(make_server: Any) -> None:
    srv: Server = make_server(["--workers", "2"])
    senders = Senders(srv)
    senders.start()
    senders.wait_for(3000)
    srv.kill(signal.SIGKILL)  # the whole process group: edge workers and loader at once
    acked = senders.stop()

    srv.start()
    assert_exactly_once(srv, acked)


def test_kill_9_of_the_loader_alone(make_server: Any) -> None:
    srv: Server = make_server()
    senders = Senders(srv)
    senders.start()
    senders.wait_for(1000)
    for _ in range(3):  # kill it repeatedly, mid-batch; the supervisor restarts it
        pid = _loader_pid(srv)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while _loader_pid(srv) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _loader_pid(srv) != pid, "loader was not restarted"
    senders.wait_for(len(senders.acked) + 500)
    acked = senders.stop()
    assert_exactly_once(srv, acked)


def _loader_pid(srv: Server) -> int:
    """The pid in the loader's heartbeat, once it has written one (it starts beside serve)."""
    beat_file = srv.data_dir / "run" / "loader.json"
    deadline = time.monotonic() + 30
    while not beat_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    beat = msgspec.json.decode(beat_file.read_bytes())
    return int(beat["pid"])
