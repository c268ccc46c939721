"""Slow and silent clients against a real server: deadlines free their connections.

Every connection holds one of a worker's slots until it closes. A client that sends its
request head or body slowly, or nothing at all, must lose its connection at the
configured deadline (shortened here), and meanwhile a normal client is answered at once.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server

HEADER_S = 2.0
BODY_IDLE_S = 2.0
BODY_S = 5.0
MAX_CONNECTIONS = 600
PATH = "/postback/v3/event/test_db/slow"
# How late a deadline may be enforced here: the server sweeps twice a second, and this
# machine is shared.
LATE_S = 6.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("slow")
    srv = Server(
        root / "data",
        [
            *("--header-timeout", str(HEADER_S)),
            *("--body-idle-timeout", str(BODY_IDLE_S)),
            *("--body-timeout", str(BODY_S)),
            *("--max-connections", str(MAX_CONNECTIONS)),
        ],
    )
    srv.start()
    yield srv
    srv.kill()


def head(srv: Server, length: int) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-TD-Write-Key: {srv.write_key}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


class Swarm:
    """Sockets that each send a fixed start, then trickle one byte per ``gap_s`` from a
    tail (nothing, if it is empty), recording what the server answers and when it
    closes them."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sel = selectors.DefaultSelector()
        self.conns: list[dict[str, Any]] = []

    def open(self, count: int, start: bytes, tail: bytes) -> None:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self._port))
            s.sendall(start)
            s.setblocking(False)
            conn = {"sock": s, "tail": tail, "got": b"", "closed_at": None}
            self.conns.append(conn)
            self._sel.register(s, selectors.EVENT_READ, conn)

    def run(self, seconds: float, gap_s: float = 0.5) -> None:
        """Trickle and read for ``seconds`` (or until the server closed every socket)."""
        deadline = time.monotonic() + seconds
        next_byte = time.monotonic()
        while time.monotonic() < deadline and self.open_count():
            for key, _ in self._sel.select(timeout=0.05):
                conn = key.data
                try:
                    data = conn["sock"].recv(65536)
                except ConnectionError:
                    data = b""
                conn["got"] += data
                if not data:
                    self._close(conn)
            if time.monotonic() >= next_byte:
                next_byte += gap_s
                for conn in self.conns:
                    if conn["closed_at"] is None and conn["tail"]:
                        try:
                            conn["sock"].send(conn["tail"][:1])
                            conn["tail"] = conn["tail"][1:]
                        except OSError:
                            self._close(conn)

    def _close(self, conn: dict[str, Any]) -> None:
        conn["closed_at"] = time.monotonic()
        self._sel.unregister(conn["sock"])
        conn["sock"].close()

    def open_count(self) -> int:
        return sum(1 for c in self.conns if c["closed_at"] is None)

    def close(self) -> None:
        for conn in self.conns:
            if conn["closed_at"] is None:
                self._close(conn)
        self._sel.close()


@pytest.fixture
def swarm(server: Server) -> Iterator[Swarm]:
    s = Swarm(server.port)
    yield s
    s.close()


def timed_postback(srv: Server, i: int) -> float:
    started = time.monotonic()
    r = srv.postback("test_db", "normal", {"i": i}, key=srv.write_key, timeout=30)
    assert r.status_code == 200, r.text
    return time.monotonic() - started


def test_a_swarm_of_slow_clients_does_not_delay_a_normal_client(
    server: Server, swarm: Swarm
) -> None:
    started = time.monotonic()
    # Heads that never end, and bodies, trickled a byte every half second. A body up to
    # 64 KiB is read in one call and must be all in within the idle deadline; a larger
    # one may take up to the total deadline, as long as it does not pause for longer.
    swarm.open(200, f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode(), b"X-Slow: y" * 100)
    swarm.open(100, head(server, 1000), b"x" * 1000)
    swarm.open(100, head(server, 100_000), b"x" * 1000)
    swarm.run(0.5)
    assert swarm.open_count() == 400
    waits = [timed_postback(server, i) for i in range(5)]
    # Generous: a normal postback takes milliseconds; a frozen door never answers.
    assert max(waits) < 2.0, waits
    swarm.run(HEADER_S + BODY_S + LATE_S)
    assert swarm.open_count() == 0
    heads, small, large = swarm.conns[:200], swarm.conns[200:300], swarm.conns[300:]
    # A head not in after its deadline: the connection is closed without an answer.
    assert all(c["got"] == b"" for c in heads)
    assert max(c["closed_at"] for c in heads) - started < HEADER_S + LATE_S
    # A body still coming at its deadline: 408 body_timeout, then closed.
    for c in small + large:
        assert c["got"].startswith(b"HTTP/1.1 408 "), c["got"][:200]
        assert b'"error":"body_timeout"' in c["got"]
    assert min(c["closed_at"] for c in small) - started >= BODY_IDLE_S
    assert max(c["closed_at"] for c in small) - started < BODY_IDLE_S + LATE_S
    assert min(c["closed_at"] for c in large) - started >= BODY_S
    assert max(c["closed_at"] for c in large) - started < BODY_S + LATE_S


def test_a_stalled_body_is_408_after_the_idle_deadline_and_kept(
    server: Server, swarm: Swarm
) -> None:
    body = b'{"stalled":"' + b"x" * 100 + b'"}'
    started = time.monotonic()
    swarm.open(1, head(server, len(body)) + body[:50], b"")
    swarm.run(BODY_IDLE_S + LATE_S)
    (conn,) = swarm.conns
    assert conn["closed_at"] is not None
    assert conn["got"].startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in conn["got"].lower()
    assert conn["closed_at"] - started >= BODY_IDLE_S
    # Refused like any other request at the door: a row operators can query, a count.
    errs = server.wait_errors(lambda e: any(r["table_name"] == "slow" for r in e))
    assert {r["reason"] for r in errs if r["table_name"] == "slow"} == {"body_timeout"}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'tdedge_requests_total{door="legacy",route="postback",status="408"}' in metrics


def test_silent_connections_past_the_cap_are_dropped_and_the_queue_moves(
    server: Server, swarm: Swarm
) -> None:
    # Connections that send nothing fill every slot; the rest wait in the listen queue.
    swarm.open(MAX_CONNECTIONS + 100, b"", b"")
    swarm.run(0.5)
    # Queued behind them, a normal client gets its turn once the deadline frees the slots.
    assert timed_postback(server, 99) < HEADER_S + LATE_S
    swarm.run(2 * HEADER_S + LATE_S)
    assert swarm.open_count() == 0
    assert all(c["got"] == b"" for c in swarm.conns)


def gone_count(srv: Server) -> float:
    """Requests whose client left before they were read, from /metrics."""
    prefix = 'tdedge_requests_total{door="legacy",route="postback",status="499"} '
    for line in httpx.get(f"{srv.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


@pytest.mark.parametrize("length", [100, 200_000], ids=["one-read", "streamed"])
def test_a_client_that_leaves_mid_body_is_one_count_not_a_traceback(
    server: Server, length: int
) -> None:
    before = gone_count(server)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head(server, length) + b'{"a":' + b" " * (length // 2))
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while gone_count(server) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone_count(server) == before + 1
    log = server.log.read_text()
    assert "Traceback" not in log and "RSGIProtocolClosed" not in log
