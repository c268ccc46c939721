"""SIGTERM drains a node: /readyz answers 503 at once (so a load balancer moves away),
requests are still served through the grace, a request in flight when the grace ends
is answered, and then every process of the node exits."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, _group_alive

GRACE_S = 3.0
# How long after its grace a drained node may take to be gone: a loaded machine.
EXIT_BOUND_S = 20.0
# A grace no stop in these tests may wait out.
LONG_GRACE_S = 3 * EXIT_BOUND_S


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", ["--drain-grace", str(GRACE_S)])
    try:
        srv.start(timeout=90)  # a loaded machine
        yield srv
    finally:
        srv.kill()


def readyz(server: Server) -> tuple[int, Any]:
    r = httpx.get(f"{server.url}/readyz", timeout=5)
    return r.status_code, r.json()


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while readyz(server)[0] != 200:
        assert time.monotonic() < deadline, "the node never became ready"
        time.sleep(0.2)


def start_slow_post(server: Server, body: bytes) -> socket.socket:
    """A records request whose head and half its body are sent; the rest is not yet."""
    head = (
        f"POST /postback/v3/event/test_db/drained HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nX-TD-Write-Key: {server.write_key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head + body[: len(body) // 2])
    return sock


def finish_post(sock: socket.socket, body: bytes) -> bytes:
    sock.sendall(body[len(body) // 2 :])
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    return answer


def gone_within(server: Server, seconds: float) -> bool:
    assert server.proc is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None and not _group_alive(server.proc.pid):
            return True
        time.sleep(0.1)
    return False


def test_sigterm_to_the_group_drains_then_exits(node: Server) -> None:
    srv = node
    wait_ready(srv)
    body = b'{"id": "in-flight", "pad": "' + b"x" * 1000 + b'"}'
    sock = start_slow_post(srv, body)
    assert srv.proc is not None
    signalled = time.monotonic()
    os.killpg(srv.proc.pid, signal.SIGTERM)  # what systemd does: every process
    time.sleep(0.5)
    status, answer = readyz(srv)
    assert status == 503
    assert answer["problems"] == ["draining: stopping after SIGTERM"]
    # Still served through the grace, and told to reconnect elsewhere.
    r = srv.postback("test_db", "drained", {"id": "during"}, key=srv.write_key)
    assert r.status_code == 200, r.text
    assert r.headers.get("connection") == "close"
    # The request in flight when the grace ends is answered.
    time.sleep(max(0.0, GRACE_S + 1.0 - (time.monotonic() - signalled)))
    assert finish_post(sock, body).startswith(b"HTTP/1.1 200")
    assert gone_within(srv, EXIT_BOUND_S)
    srv.start(timeout=90)
    srv.wait_for(
        "SELECT id FROM test_db.drained ORDER BY id",
        lambda rows: rows == [{"id": "during"}, {"id": "in-flight"}],
        timeout=60,
    )


def test_ctrl_c_twice_during_a_request_answers_it_then_exits(node: Server) -> None:
    """Every signal a stopping worker gets counts once: its own stop, the supervisor's
    stop of every worker and a second Ctrl-C together neither freeze the request in
    flight nor keep the node from exiting."""
    srv = node
    wait_ready(srv)
    body = b'{"id": "in-flight", "pad": "' + b"x" * 1000 + b'"}'
    sock = start_slow_post(srv, body)
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(srv.proc.pid, signal.SIGINT)
    time.sleep(GRACE_S + 1.0)  # past the grace, were a stop to wait for it
    assert finish_post(sock, body).startswith(b"HTTP/1.1 200")
    assert gone_within(srv, EXIT_BOUND_S)
    srv.start(timeout=90)
    srv.wait_for(
        "SELECT id FROM test_db.drained", lambda rows: rows == [{"id": "in-flight"}], timeout=60
    )


def test_sigterm_to_serve_alone_drains_its_workers_too(node: Server) -> None:
    srv = node
    wait_ready(srv)
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGTERM)  # what a container runtime does: the first only
    time.sleep(0.5)
    assert readyz(srv)[0] == 503
    r = srv.postback("test_db", "drained", {"id": "during"}, key=srv.write_key)
    assert r.status_code == 200, r.text
    assert gone_within(srv, GRACE_S + EXIT_BOUND_S)
    # A node killed while draining does not come back not-ready.
    srv.start(timeout=90)
    wait_ready(srv)


def test_ctrl_c_to_serve_alone_stops_its_workers_without_the_grace(tmp_path: Path) -> None:
    """SIGINT stops at once even when only serve gets it: the SIGTERM with which granian
    then stops its workers does not start a drain in them."""
    srv = Server(tmp_path / "data", ["--drain-grace", str(LONG_GRACE_S)])
    try:
        srv.start(timeout=90)
        wait_ready(srv)
        assert srv.proc is not None
        os.kill(srv.proc.pid, signal.SIGINT)
        assert gone_within(srv, EXIT_BOUND_S)
    finally:
        srv.kill()
