"""Query jobs across ``tdedge serve`` nodes on one PostgreSQL (control plane and lake
catalog) and one S3 server (the lake's files and the jobs' results): a job issued
through one node with td-client is listed, waited on and its result fetched through
another, after the node that ran it is gone; a job whose runner is killed (kill -9 of
its node) is run again once by another node's runner, then failed with a reason."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tdclient

from tests.e2e.cluster_support import Node, Shared, shared_servers
from tests.e2e.restapi_support import td1, wait_job

# A job that runs until it is stopped: a cross join of 4·10¹⁰ rows that keeps none.
ENDLESS = (
    "SELECT count(*) FROM UNNEST(sequence(1, 200000)) AS a(x) "
    "CROSS JOIN UNNEST(sequence(1, 200000)) AS b(y) WHERE x + y < 0"
)
# The lease of a job on a node that dies; short, so that the test waits little for it.
LEASE_S = 3
# How long a node may take to notice a dead node's job, on a loaded test machine.
TAKEOVER_BOUND_S = LEASE_S + 60.0


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    with shared_servers() as servers:
        yield servers


@pytest.fixture
def cluster(
    shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[Node]]:
    """The nodes a test starts (none yet), all on a fresh shared control plane and lake;
    every one is killed at the end."""
    for name, value in shared.cluster_environ().items():
        monkeypatch.setenv(name, value)
    nodes: list[Node] = []
    yield nodes
    for node in nodes:
        node.kill()


def add(nodes: list[Node], root: Path, *extra: str) -> Node:
    node = Node(root / f"node{len(nodes)}", list(extra), nodes[0] if nodes else None)
    nodes.append(node)
    return node.start()


def test_a_job_run_by_one_node_is_listed_waited_on_and_fetched_through_another(
    cluster: list[Node], tmp_path: Path
) -> None:
    a = add(cluster, tmp_path)
    through_a = tdclient.Client(apikey=a.server.master_key, endpoint=a.api)
    query = (
        "SELECT n, concat('row ', CAST(n AS varchar)) AS s FROM UNNEST(sequence(1, 3000)) AS t(n)"
    )
    job = through_a.query("test_db", query, type="presto")
    job.wait(timeout=120, wait_interval=1)
    assert job.success(), job.debug
    # The node that ran it is gone: its data dir can serve nothing now.
    a.kill()
    b = add(cluster, tmp_path)
    through_b = tdclient.Client(apikey=b.server.master_key, endpoint=b.api)
    assert job.job_id in {j.job_id for j in through_b.jobs()}
    seen = through_b.job(job.job_id)
    seen.wait(timeout=60, wait_interval=1)
    assert seen.success() and seen.num_records == 3000
    expected = [[n, f"row {n}"] for n in range(1, 3001)]
    # msgpack.gz in Range requests, as td-client's download_job_result fetches it.
    rows: Any = list(
        through_b.api.job_result_format_each(job.job_id, "msgpack", store_tmpfile=True)
    )
    assert rows == expected
    whole: Any = list(seen.result())  # msgpack in one response
    assert whole == expected
    r = httpx.get(
        f"{b.api}/v3/job/result/{job.job_id}?format=csv&header=true",
        headers=td1(b.server.master_key),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["n", "s"] and table[1:] == [[str(n), s] for n, s in expected]
    # Node A's data dir holds no result: it is on the object store.
    assert not any((a.server.data_dir / "results").glob("*.msgpack.gz"))


def test_a_job_whose_node_is_killed_is_run_again_elsewhere_then_failed_with_a_reason(
    cluster: list[Node], tmp_path: Path
) -> None:
    lease = ["--job-lease", str(LEASE_S), "--job-timeout", "600"]
    a = add(cluster, tmp_path, *lease)
    key = a.server.master_key
    r = httpx.post(
        f"{a.api}/v3/job/issue/presto/test_db", data={"query": ENDLESS}, headers=td1(key)
    )
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    first = _wait_running(a, key, job, since=None)
    b = add(cluster, tmp_path, *lease)
    a.kill()  # mid-job: its runner never records how the job ended
    # B's runner takes it over once A's lease has run out, and runs it again.
    _wait_running(b, key, job, since=first["start_at"])
    b.kill()
    # The job took two runners down: the next runner to look fails it, with the reason.
    a.start()
    done = wait_job(a.api, key, job, timeout=TAKEOVER_BOUND_S)
    assert done["status"] == "error"
    shown = httpx.get(f"{a.api}/v3/job/show/{job}", headers=td1(key), timeout=30).json()
    assert "the job runner stopped while running this job, 2 times" in shown["debug"]["stderr"]


def _wait_running(node: Node, key: str, job: str, since: str | None) -> dict[str, Any]:
    """The job's ``show`` once it runs, started after ``since`` (another run)."""
    deadline = time.monotonic() + TAKEOVER_BOUND_S
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = httpx.get(f"{node.api}/v3/job/show/{job}", headers=td1(key), timeout=30).json()
        assert shown["status"] in ("queued", "running"), shown
        if shown["status"] == "running" and shown["start_at"] != since:
            return shown
        time.sleep(0.2)
    raise AssertionError(f"job {job} never ran again: {shown}")
