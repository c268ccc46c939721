"""Two ``tdedge serve`` nodes, each with its own data dir, journal and loader, sharing one
lake: a PostgreSQL catalog and files on a real S3 server (SeaweedFS), chosen through
TDEDGE_LAKE_CATALOG / TDEDGE_LAKE_DATA and the AWS variables, as an operator would.
Records sent through either node land once each; a query job on one node reads what
came through both; ``tdedge query`` on either data dir sees the same lake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.cluster_support import shared_servers
from tests.e2e.conftest import free_port
from tests.e2e.restapi_support import td1, wait_job

PER_NODE = 30


@pytest.fixture(scope="module")
def shared_lake() -> Iterator[dict[str, str]]:
    with shared_servers() as shared:
        yield shared.lake_environ()


def test_two_nodes_share_one_lake(
    shared_lake: dict[str, str], make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in shared_lake.items():
        monkeypatch.setenv(name, value)
    ports = [free_port(), free_port()]
    nodes = [make_server(["--api-port", str(port)]) for port in ports]
    for n, node in enumerate(nodes):
        for i in range(PER_NODE):
            record = {"time": 1_700_000_000 + i, "id": f"{n}-{i}"}
            r = node.postback("test_db", "events", record, key=node.write_key)
            assert r.status_code == 200, r.text
    total = 2 * PER_NODE
    for node in nodes:
        rows = node.wait_for(
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events",
            lambda r: r[0]["n"] >= total,
            database="test_db",
            timeout=120,
        )
        assert rows == [{"n": total, "d": total}]
    # A query job through node 1 reads the rows that came through node 0 too.
    api = f"http://127.0.0.1:{ports[1]}"
    key = nodes[1].master_key
    r = httpx.post(
        f"{api}/v3/job/issue/presto/test_db",
        data={"query": "SELECT count(*) AS n FROM events WHERE id LIKE '0-%'"},
        headers=td1(key),
    )
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    assert wait_job(api, key, job, timeout=120)["status"] == "success"
    result = httpx.get(f"{api}/v3/job/result/{job}?format=json", headers=td1(key))
    assert result.status_code == 200, result.text
    assert result.text.strip() == f"[{PER_NODE}]"
    # Every node's lake is the shared one: its own data dir holds no lake files.
    for node in nodes:
        assert not any((node.data_dir / "lake" / "data").rglob("*.parquet"))
