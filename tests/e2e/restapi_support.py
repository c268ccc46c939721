"""Shared helpers for the REST API end-to-end tests: a server with its api port."""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import Iterable
from typing import Any

import httpx
import msgpack

from tests.e2e.conftest import Server, free_port


def start_api_server(make_server: Any, *extra: str) -> tuple[Server, str]:
    port = free_port()
    srv: Server = make_server(["--api-port", str(port), *extra])
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{endpoint}/healthz", timeout=1).status_code == 200:
                return srv, endpoint
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the api port did not open")


def fluent_body(records: Iterable[dict[str, Any]]) -> bytes:
    """A chunk as fluent-plugin-td uploads it: msgpack maps back to back, gzipped."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz:
        for record in records:
            gz.write(msgpack.packb(record))
    return out.getvalue()


def td1(key: str) -> dict[str, str]:
    return {"Authorization": f"TD1 {key}"}


def wait_job(endpoint: str, key: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{endpoint}/v3/job/status/{job_id}", headers=td1(key))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in ("success", "error", "killed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def wait_rows(srv: Server, sql: str, database: str, n: int) -> list[dict[str, Any]]:
    return srv.wait_for(sql, lambda rows: len(rows) == n, database=database, timeout=60)
