"""Local ports: a free one, plain HTTP to it, and waiting for a child to answer there."""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import urllib.error
import urllib.request

from harness import BenchError
from harness.children import Child

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body); an error status is an answer too, only no answer raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def http_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return int(resp.status)
    finally:
        conn.close()


def wait_answering(child: Child, url: str, timeout: float, want: int | None = None) -> None:
    """Until GET ``url`` gets an answer (``want``: that status), else BenchError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited:\n{child.tail()}")
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout=1)
            if want is None or status == want:
                return
        time.sleep(0.05)
    raise BenchError(f"{child.name} did not answer at {url}:\n{child.tail()}")
