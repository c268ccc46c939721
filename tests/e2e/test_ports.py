"""Which port answers what: the operators' endpoints only on the operators' port.

With ``--api-port`` the REST API, ``/metrics`` and the details of ``/readyz`` answer on
that port only; the main port and the records port are public ingest ports. Without
it, one port serves everything, as before.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import Server, free_port, wait_healthy
from tests.e2e.restapi_support import td1

API_HOST = {"Host": "api.example.com"}
# The first REST call of a worker opens the lake's catalog: seconds on a busy machine.
TIMEOUT = 60


def test_operators_endpoints_answer_on_the_api_port_only(make_server: Any) -> None:
    api_port, records_port = free_port(), free_port()
    srv: Server = make_server(["--api-port", str(api_port), "--records-port", str(records_port)])
    api = f"http://127.0.0.1:{api_port}"
    records = f"http://127.0.0.1:{records_port}"
    wait_healthy(api)
    wait_healthy(records)
    key = td1(srv.master_key)

    assert httpx.get(f"{api}/v3/database/list", headers=key, timeout=TIMEOUT).status_code == 200
    assert httpx.get(f"{api}/metrics").status_code == 200
    assert "tdedge_requests_total" in httpx.get(f"{api}/metrics").text
    detailed = httpx.get(f"{api}/readyz").json()
    assert {"ready", "problems", "loader", "jobs"} <= set(detailed)

    # The main ingest port, even with an api.* host name: a 404 that says where to go.
    moved = httpx.get(f"{srv.url}/v3/database/list", headers={**key, **API_HOST})
    assert moved.status_code == 404
    assert moved.json()["error"] == "operators_port_only"
    assert "API port" in moved.json()["message"]
    for public in (srv.url, records):
        metrics = httpx.get(f"{public}/metrics")
        assert metrics.status_code == 404, public
        assert metrics.json()["error"] == "operators_port_only"
        assert "API port" in metrics.json()["message"]
        assert "tdedge_" not in metrics.text
        # Readiness for load balancers everywhere, its reasons on the API port only.
        ready = httpx.get(f"{public}/readyz")
        assert ready.json() == {"ready": ready.status_code == 200}, public
        assert httpx.get(f"{public}/healthz").status_code == 200

    # The ingest doors still answer on their ports.
    r = srv.postback("test_db", "ports", {"n": 1}, key=srv.write_key, timeout=TIMEOUT)
    assert r.status_code == 200


def test_one_port_serves_everything_without_an_api_port(server: Server) -> None:
    key = td1(server.master_key)
    r = httpx.get(f"{server.url}/v3/database/list", headers={**key, **API_HOST}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert "test_db" in r.text
    assert "tdedge_requests_total" in httpx.get(f"{server.url}/metrics").text
    assert "problems" in httpx.get(f"{server.url}/readyz").json()
