"""Starts the real ``tdedge serve`` on a free port with a fresh data dir."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``tdedge serve`` process group, its keys and helpers to reach it."""

    def __init__(
        self, data_dir: Path, extra: list[str] | None = None, python: str = sys.executable
    ) -> None:
        self.data_dir = data_dir
        self.extra = extra or []
        self.tdedge = [python, "-m", "tdedge"]  # another environment's, to test installs
        self.port = free_port()
        # With --tls-cert every port speaks HTTPS (the tests use self-signed certificates).
        self.scheme = "https" if "--tls-cert" in self.extra else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.master_key = ""
        self.write_key = ""

    def start(self, timeout: float = 20.0) -> None:
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [
                *self.tdedge,
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: kill it whole
            # No load balancer waits on these servers' /readyz: a stop drains for no
            # one. The draining tests give their own --drain-grace, which wins.
            env={**os.environ, "TDEDGE_DRAIN_GRACE": "0"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=False).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            self.kill()  # the whole group: a fixture that raises here never stops it
            raise RuntimeError(f"serve did not start:\n{self.log.read_text()}")
        text = self.log.read_text()
        if not self.master_key:
            self.master_key = _find(r"master key: (\S+)", text)
            self.write_key = _find(r"write key:\s+(\S+)", text)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        # Wait for every process of the group (workers, loader) to be gone.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc is not None and _group_alive(self.proc.pid):
            time.sleep(0.1)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.tdedge, *_with_data_dir(args, self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"tdedge {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def query(self, sql: str, database: str | None = None) -> list[dict[str, Any]]:
        args = ["query", "--format", "json", *(["-d", database] if database else []), sql]
        rows: list[dict[str, Any]] = msgspec.json.decode(self.cli(*args).stdout)
        return rows

    def wait_for(
        self, sql: str, predicate: Any, database: str | None = None, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            done = self.cli(
                "query",
                "--format",
                "json",
                *(["-d", database] if database else []),
                sql,
                check=False,
            )
            if done.returncode == 0:
                rows = msgspec.json.decode(done.stdout)
                if predicate(rows):
                    return rows
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {sql!r}; last rows: {rows}")

    def errors(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = msgspec.json.decode(
            self.cli("errors", "--format", "json", "--limit", "10000").stdout
        )
        return rows

    def wait_errors(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        errs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            errs = self.errors()
            if predicate(errs):
                return errs
            time.sleep(0.2)
        raise AssertionError(f"import errors never matched; last: {errs}")

    def postback(
        self, db: str, table: str, record: Any, key: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["X-TD-Write-Key"] = key
        headers.update(kw.pop("headers", {}))
        return httpx.post(
            f"{self.url}/postback/v3/event/{db}/{table}",
            content=msgspec.json.encode(record),
            headers=headers,
            **kw,
        )


def wait_healthy(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url``/healthz answers: a dedicated door port starts after the main one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1, verify=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not become healthy in {timeout}s")
        time.sleep(0.1)


def wait_readyz(
    server: Server, until: Any, timeout: float = 30, url: str | None = None
) -> dict[str, Any]:
    """/readyz's body with its ``status``, once ``until(body)`` holds or ``timeout`` is up
    (the last one then). ``url``: the operators' port, when it is not the main one."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url or server.url}/readyz")
        body: dict[str, Any] = {"status": r.status_code, **r.json()}
        if until(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def _with_data_dir(args: tuple[str, ...], data_dir: Path) -> list[str]:
    # Groups (keys, db, table) take --data-dir on their sub-command.
    at = 2 if args[0] in {"keys", "db", "table"} else 1
    return [*args[:at], "--data-dir", str(data_dir), *args[at:]]


def _find(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    if not m:
        raise AssertionError(f"{pattern!r} not in serve output:\n{text}")
    return m.group(1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(extra: list[str] | None = None, data_dir: Path | None = None) -> Server:
        srv = Server(data_dir or tmp_path / f"data{len(servers)}", extra)
        servers.append(srv)
        srv.start()
        return srv

    yield make
    for srv in servers:
        srv.kill()


@pytest.fixture
def server(make_server: Any) -> Server:
    srv: Server = make_server()
    return srv
