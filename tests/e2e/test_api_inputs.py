"""REST API parameters at their edges: a clear 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port, wait_healthy
from tests.e2e.restapi_support import td1, wait_job

TIMEOUT = 60  # a worker's first REST call opens the lake's catalog


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    port = free_port()
    srv = Server(Path(tmp_path_factory.mktemp("inputs")) / "data", ["--api-port", str(port)])
    srv.start(timeout=60)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(endpoint)
        yield srv, endpoint
    finally:
        srv.kill()


@pytest.mark.parametrize(
    "params",
    [{"to": str(2**64)}, {"to": "9" * 40}, {"from": "-1"}, {"from": str(2**63)}, {"to": "x"}],
)
def test_job_list_bounds_its_integers(api: tuple[Server, str], params: dict[str, str]) -> None:
    srv, endpoint = api
    r = httpx.get(
        f"{endpoint}/v3/job/list", params=params, headers=td1(srv.master_key), timeout=TIMEOUT
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_parameter"


def test_job_issue_bounds_its_integers(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    url = f"{endpoint}/v3/job/issue/presto/test_db"
    key = td1(srv.master_key)
    huge = httpx.post(url, data={"query": "SELECT 1", "retry_limit": str(2**64)}, headers=key)
    assert huge.status_code == 400 and huge.json()["error"] == "invalid_parameter"
    low = httpx.post(url, data={"query": "SELECT 1", "priority": "-2"}, headers=key)
    assert low.status_code == 200, low.text


def test_an_empty_suffix_range_is_416(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    key = td1(srv.master_key)
    issued = httpx.post(
        f"{endpoint}/v3/job/issue/presto/test_db",
        data={"query": "SELECT 1 AS n"},
        headers=key,
        timeout=TIMEOUT,
    )
    job = str(issued.json()["job_id"])
    assert wait_job(endpoint, srv.master_key, job)["status"] == "success"
    url = f"{endpoint}/v3/job/result/{job}"
    whole = httpx.get(url, params={"format": "msgpack.gz"}, headers=key).content
    empty = httpx.get(url, params={"format": "msgpack.gz"}, headers={**key, "Range": "bytes=-0"})
    assert empty.status_code == 416
    assert empty.headers["content-range"] == f"bytes */{len(whole)}"
    last = httpx.get(url, params={"format": "msgpack.gz"}, headers={**key, "Range": "bytes=-3"})
    assert last.status_code == 206 and last.content == whole[-3:]
