"""Two ``tdedge serve`` nodes (own data dirs, ports and lakes) on one PostgreSQL control
database: keys, databases and query jobs made through one are honoured by the other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests import postgres
from tests.e2e.conftest import Server, free_port, wait_healthy
from tests.e2e.restapi_support import td1, wait_job

# A revoked key is honoured on every node within key_cache_ttl_s (5 s); the margin is
# for a loaded test machine.
REVOKE_BOUND_S = 5.0 + 5.0


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    with postgres.server() as server:
        yield server


class Node:
    def __init__(self, server: Server, api_port: int) -> None:
        self.server = server
        self.api = f"http://127.0.0.1:{api_port}"


@pytest.fixture
def nodes(pg: postgres.Postgres, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    url = pg.new_database()
    started: list[Server] = []
    made: list[Node] = []
    try:
        for i in range(2):
            api_port = free_port()
            extra = ["--control", url, "--auth", "sync", "--api-port", str(api_port)]
            server = Server(tmp_path / f"node{i}", extra)
            if made:  # the control plane is made once: the keys the first node printed
                server.master_key = made[0].server.master_key
                server.write_key = made[0].server.write_key
            started.append(server)
            server.start(timeout=60)
            made.append(Node(server, api_port))
            wait_healthy(made[-1].api, timeout=60)
        yield made[0], made[1]
    finally:
        for server in started:
            server.kill()


def post(node: Node, db: str, key: str, record: dict[str, Any]) -> int:
    return node.server.postback(db, "events", record, key=key).status_code


def test_a_key_made_on_one_node_works_on_the_other_and_its_revocation_too(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    key = a.server.cli("keys", "create", "--control", _control(a)).stdout.strip()
    assert post(b, "test_db", key, {"n": 1}) == 200  # a miss asks the shared database
    (row,) = [k for k in _keys(b) if key.startswith(f"{k['account_id']}/")][-1:]
    a.server.cli("keys", "revoke", "--control", _control(a), row["key_id"])
    revoked_at = time.monotonic()
    while post(b, "test_db", key, {"n": 2}) != 403:
        assert time.monotonic() - revoked_at < REVOKE_BOUND_S, "the revocation never reached b"
        time.sleep(0.2)


def test_a_database_made_on_one_node_is_writable_through_the_other(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    master = a.server.master_key
    r = httpx.post(f"{a.api}/v3/database/create/shared_db", headers=td1(master), timeout=60)
    assert r.status_code == 200, r.text
    listed = httpx.get(f"{b.api}/v3/database/list", headers=td1(master), timeout=60).json()
    assert "shared_db" in {d["name"] for d in listed["databases"]}
    assert post(b, "shared_db", b.server.write_key, {"n": 7}) == 200
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while rows != [{"n": 7}]:
        assert time.monotonic() < deadline, f"b never loaded the row: {rows}"
        time.sleep(0.5)
        done = b.server.cli(
            "query",
            "--control",
            _control(b),
            "--format",
            "json",
            "-d",
            "shared_db",
            "SELECT n FROM events",
            check=False,
        )
        rows = msgspec.json.decode(done.stdout) if done.returncode == 0 else []


def test_a_job_issued_on_one_node_is_run_once_and_seen_on_the_other(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    master = a.server.master_key
    issued = [
        httpx.post(
            f"{a.api}/v3/job/issue/presto/test_db",
            data={"query": f"SELECT {i} AS n"},
            headers=td1(master),
            timeout=60,
        ).json()["job_id"]
        for i in range(6)
    ]
    for job_id in issued:
        done = wait_job(b.api, master, job_id)
        assert done["status"] == "success", done
    listed = httpx.get(f"{b.api}/v3/job/list", headers=td1(master), timeout=60).json()["jobs"]
    assert {str(j["job_id"]) for j in listed} >= {str(j) for j in issued}


def _control(node: Node) -> str:
    return node.server.extra[node.server.extra.index("--control") + 1]


def _keys(node: Node) -> list[dict[str, Any]]:
    out = node.server.cli("keys", "list", "--format", "json", "--control", _control(node))
    rows: list[dict[str, Any]] = msgspec.json.decode(out.stdout)
    return rows
