"""``tdedge serve`` on a data dir, on free ports, started and stopped as one process
group; its keys, /metrics and CLI."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness import BenchError, log
from harness.children import Child, Children, group_cpu_s
from harness.metrics import scrape
from harness.ports import HOST, free_port, http_get

# The benches run under the repository's .venv, whose Python imports tdedge.
TDEDGE = (sys.executable, "-m", "tdedge")


def check_tdedge() -> None:
    """BenchError unless this Python can run tdedge."""
    if importlib.util.find_spec("tdedge") is None:
        raise BenchError(f"{sys.executable} cannot import tdedge: pip install -e '.[dev]'")


class Tdedge:
    """One ``tdedge serve`` process group on a data dir.

    ``doors`` are the extra ports it listens on (``records``, ``api``, ``p13n``: each
    ``--<door>-port``), free ones picked at every start. A first start on an empty data
    dir prints the account's keys, which are read from its output; on a data dir made
    before, set ``write_key`` and ``master_key`` before ``start``.
    """

    def __init__(
        self,
        children: Children,
        data_dir: Path,
        logdir: Path,
        workers: int = 1,
        loader: bool = True,
        log_level: str = "warning",
        extra: Sequence[str] = (),
        doors: Sequence[str] = (),
    ) -> None:
        self.children = children
        self.data_dir = data_dir
        self.logdir = logdir
        self.workers = workers
        self.loader = loader
        self.log_level = log_level
        self.extra = list(extra)
        self.doors = list(doors)
        self.port = 0
        self.ports: dict[str, int] = {}
        self.child: Child | None = None
        self.master_key = ""
        self.write_key = ""
        self.started_at = 0.0  # time.monotonic() just before the process was spawned

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def door_url(self, door: str) -> str:
        return f"http://{HOST}:{self.ports[door]}"

    @property
    def ops_url(self) -> str:
        """Where /metrics answers: the API port when there is one, else the main port."""
        return self.door_url("api") if "api" in self.ports else self.url

    @property
    def pgid(self) -> int:
        if self.child is None:
            raise BenchError("tdedge serve is not running")
        return self.child.pid

    def start(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        self.ports = {door: free_port() for door in self.doors}
        argv = [
            *TDEDGE,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            *(a for door, port in self.ports.items() for a in (f"--{door}-port", str(port))),
            "--workers",
            str(self.workers),
            "--log-level",
            self.log_level,
            *([] if self.loader else ["--no-loader"]),
            *self.extra,
        ]
        name = f"tdedge-w{self.workers}-{self.port}"
        log(f"starting {shlex.join(argv)}")
        self.started_at = time.monotonic()
        self.child = self.children.start(name, argv, self.logdir)
        deadline = time.monotonic() + timeout
        for port in (self.port, *self.ports.values()):
            self._wait_healthy(port, deadline)
        if not self.write_key:
            self._read_keys(deadline)
        log(f"tdedge up on {self.url} after {time.monotonic() - self.started_at:.1f}s")

    def _wait_healthy(self, port: int, deadline: float) -> None:
        assert self.child is not None
        while time.monotonic() < deadline:
            if not self.child.alive():
                if not self.write_key:  # a first start prints the keys before anything fails
                    self._scan_keys()
                raise BenchError(f"tdedge serve exited:\n{self.child.tail()}")
            with contextlib.suppress(OSError):
                if http_get(f"http://{HOST}:{port}/healthz", timeout=1)[0] == 200:
                    return
            time.sleep(0.05)
        raise BenchError(f"tdedge serve did not answer /healthz on {port}:\n{self.child.tail()}")

    def _scan_keys(self) -> bool:
        assert self.child is not None
        text = self.child.stdout.read_text(errors="replace")
        master = re.search(r"^\s*master key:\s*(\S+)", text, re.MULTILINE)
        write = re.search(r"^\s*write key:\s*(\S+)", text, re.MULTILINE)
        if master and write:
            self.master_key, self.write_key = master.group(1), write.group(1)
            return True
        return False

    def _read_keys(self, deadline: float) -> None:
        assert self.child is not None
        while time.monotonic() < deadline:
            if self._scan_keys():
                return
            time.sleep(0.05)
        raise BenchError(
            "no 'write key:' line in serve's stdout (is the data dir empty?):\n" + self.child.tail()
        )

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the server's processes stop starting up (the loader, the job runner
        and the workers import a lot), so their start-up CPU is not billed to a run."""
        deadline = time.monotonic() + timeout
        last = sum(group_cpu_s(self.pgid).values())
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = sum(group_cpu_s(self.pgid).values())
            if now - last < 0.05:  # under 10 % of a core
                return
            last = now
        log("server still busy after start-up; measuring anyway")

    def stop(self) -> None:
        if self.child is not None:
            self.children.stop(self.child, timeout=30.0)
            self.child = None

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def metrics(self) -> dict[str, float]:
        return scrape(f"{self.ops_url}/metrics")

    def cli(
        self, *args: str, timeout: float = 120.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``tdedge *args`` (the caller passes ``--data-dir`` where the command takes it)."""
        return subprocess.run(
            [*TDEDGE, *args], capture_output=True, text=True, timeout=timeout, check=check
        )

    def count(self, table: str) -> int | None:
        """``SELECT count(*)`` of ``table`` (``db.table``) through ``tdedge query``; None
        when the query fails."""
        done = self.cli(
            "query",
            "--data-dir",
            str(self.data_dir),
            "--format",
            "json",
            f"SELECT count(*) AS n FROM {table}",
        )
        if done.returncode != 0:
            return None
        try:
            return int(json.loads(done.stdout)[0]["n"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def create_database(data_dir: Path, name: str) -> str:
    """``tdedge db create``; falls back to the control store when the CLI cannot run.
    Returns which of the two made it."""
    done = subprocess.run(
        [*TDEDGE, "db", "create", "--data-dir", str(data_dir), name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 0 or "already exists" in done.stderr:
        return "tdedge db create"
    log(f"tdedge db create failed ({done.stderr.strip().splitlines()[-1:]}); using ControlStore")
    from tdedge.config import Settings
    from tdedge.control.store import ControlStore
    from tdedge.errors import AlreadyExists

    store = ControlStore.open(Settings(data_dir=str(data_dir)).control_db)
    try:
        with contextlib.suppress(AlreadyExists):
            store.create_database(name, 1)
    finally:
        store.close()
    return "ControlStore.create_database (db create failed)"
