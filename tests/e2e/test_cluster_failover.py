"""Two nodes behind HAProxy (deploy/haproxy.cfg) on shared PostgreSQL and S3, started as
``scripts/cluster up`` starts them. Senders post records through HAProxy and remember
every 200. A node drained with SIGTERM costs the clients nothing; a node killed with
kill -9 costs only the requests it held as it died (a few per sender: HAProxy retries
a request only when it could not connect, never one a node may have stored),
and once it is back every acknowledged record is in its table exactly once."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests import postgres, seaweed
from tests.cluster import Cluster

SENDERS = 4
# HAProxy puts a node back after `rise` passing checks `inter` apart (2 x 2 s).
HAPROXY_RISE_S = 2 * 2.0 + 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not postgres.available() or seaweed.binary() is None or shutil.which("haproxy") is None:
        pytest.fail("PostgreSQL 15, SeaweedFS and HAProxy are needed: scripts/setup")
    # Not under pytest's own temporary folder: as root, PostgreSQL runs as its own user,
    # which must be able to reach its data dir.
    root = Path(tempfile.mkdtemp(prefix="tdedge-cluster-"))
    root.chmod(0o755)
    try:
        found = Cluster.up(root)
        try:
            yield found
        finally:
            found.down(keep_s3=False)  # its files are removed below
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Senders:
    """Clients posting records with unique ids through the balancer: which got a 200,
    and every other outcome (a status, or a transport error) with its id."""

    def __init__(self, url: str, key: str) -> None:
        self.url = f"{url}/postback/v3/event/test_db/failover"
        self.key = key
        self.acked: list[int] = []
        self.errors: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(SENDERS)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _send(self, n: int) -> None:
        headers = {"X-TD-Write-Key": self.key, "Content-Type": "application/json"}
        with httpx.Client(timeout=30) as client:
            for i in range(1_000_000):
                if self._stop.is_set():
                    return
                rid = n * 1_000_000 + i
                body = msgspec.json.encode({"id": rid})
                try:
                    r = client.post(self.url, content=body, headers=headers)
                except httpx.TransportError as e:
                    with self._lock:
                        self.errors.append((rid, f"transport: {e!r}"))
                    continue
                with self._lock:
                    if r.status_code == 200:
                        self.acked.append(rid)
                    else:
                        self.errors.append((rid, f"{r.status_code}: {r.text[:200]}"))

    def wait_for(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= count, f"only {len(self.acked)} acknowledged: {self.errors}"

    def stop(self) -> list[int]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return list(self.acked)


def test_drain_and_kill_9_behind_haproxy(cluster: Cluster) -> None:
    senders = Senders(cluster.url, cluster.state.write_key)
    senders.start()
    try:
        senders.wait_for(100)

        # A node drained under load: not one client sees an error.
        cluster.stop_node(1, signal.SIGTERM)
        senders.wait_for(len(senders.acked) + 100)
        assert senders.errors == []
        cluster.start_node(1)
        time.sleep(HAPROXY_RISE_S)  # back in HAProxy's pool
        senders.wait_for(len(senders.acked) + 100)
        assert senders.errors == []

        # A node killed under load: the other carries on. The requests the dead node
        # held get no answer (no 200: no promise): HAProxy answers 502 on a client's
        # new connection, and closes a kept-alive one without a word, as the node did
        # (the client may retry). Nothing else fails: new requests go elsewhere.
        cluster.stop_node(0, signal.SIGKILL)
        senders.wait_for(len(senders.acked) + 200)
        during_kill = list(senders.errors)
        cluster.start_node(0, wait=False)  # its loader loads what it acknowledged
    finally:
        acked = senders.stop()
    print(f"acknowledged {len(acked)}; failed during the kill: {during_kill}")
    # Each sender's request in flight, and at most one more per sender that HAProxy
    # handed to the node in the milliseconds its processes took to die (accepted by
    # the kernel on the listening socket that was still open, then reset).
    assert len(during_kill) <= 2 * SENDERS, during_kill
    for _, error in during_kill:
        assert error.startswith("502") or "without sending a response" in error, during_kill

    # Every acknowledged record exactly once, seen through the node that was not killed.
    deadline = time.monotonic() + 120
    while True:
        rows = cluster.query(
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM failover", "test_db", through=1
        )
        if rows[0]["n"] >= len(acked) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert rows[0]["n"] == rows[0]["d"], "a record landed twice"
    ids = {r["id"] for r in cluster.query("SELECT id FROM failover", "test_db", through=1)}
    missing = set(acked) - ids
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # A failed request may have been stored before its node died (no 200 reached the
    # client): it is there at most once, never twice.
    assert len(ids) <= len(acked) + len(during_kill)
