"""A local cluster: PostgreSQL (control plane and lake catalog), SeaweedFS (the lake's
files), two ``tdedge serve`` nodes on them and HAProxy in front with deploy/haproxy.cfg,
everything in one state dir. ``scripts/cluster up|down|status`` and the cluster's
end-to-end test start it the same way (the servers as tests/postgres.py and
tests/seaweed.py start them for every test).

Every process runs in a session of its own, so the cluster outlives the command that
started it; ``cluster.json`` in the state dir says what runs where, for ``down``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from tests import postgres, seaweed

REPO = Path(__file__).resolve().parent.parent
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
STATE = "cluster.json"
NODES = 2
# A loaded machine starts a node in tens of seconds (its loader, the lake's extensions).
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node(msgspec.Struct):
    port: int
    data_dir: str
    pid: int = 0


class State(msgspec.Struct):
    root: str
    environ: dict[str, str]  # what every node and CLI call gets: the shared backends
    postgres_pid: int
    s3_pid: int
    lb_port: int
    nodes: list[Node]
    haproxy_pid: int = 0
    master_key: str = ""
    write_key: str = ""
    # More ``serve`` options for every node (a replicated journal, shared profiles):
    # kept so that a node started again later is started as the others were.
    node_options: list[str] = []


class Cluster:
    def __init__(self, state: State) -> None:
        self.state = state

    @property
    def root(self) -> Path:
        return Path(self.state.root)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state.lb_port}"

    def node_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.state.nodes[i].port}"

    @classmethod
    def load(cls, root: Path) -> Cluster:
        return cls(msgspec.json.decode((root / STATE).read_bytes(), type=State))

    def save(self) -> None:
        (self.root / STATE).write_bytes(msgspec.json.format(msgspec.json.encode(self.state)))

    @classmethod
    def up(cls, root: Path, node_options: tuple[str, ...] = ()) -> Cluster:
        """Start everything in ``root`` (made if need be); ``node_options``: more
        ``serve`` options for every node. Stops what it started if a part fails."""
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        _check_reachable_by_postgres(root)
        (root / "postgres").mkdir(exist_ok=True)
        (root / "s3").mkdir(exist_ok=True)
        # The two servers start side by side: each waits mostly for itself.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pg_started = pool.submit(postgres.start, root / "postgres", True)
            s3_started = pool.submit(seaweed.start, root / "s3", True)
            concurrent.futures.wait([pg_started])
            concurrent.futures.wait([s3_started])
        if pg_started.exception() is not None or s3_started.exception() is not None:
            if pg_started.exception() is None:
                postgres.stop(root / "postgres")
            if s3_started.exception() is None:
                seaweed.stop(s3_started.result()[1].pid)
            raise RuntimeError("a server did not start") from (
                pg_started.exception() or s3_started.exception()
            )
        pg, pg_proc = pg_started.result()
        s3, s3_proc = s3_started.result()
        s3_pid = s3_proc.pid
        try:
            control, catalog = pg.new_database(), pg.new_database()
            environ = {
                **s3.environ(),
                "TDEDGE_CONTROL": control,
                "TDEDGE_LAKE_CATALOG": catalog,
                "TDEDGE_LAKE_DATA": f"s3://{s3.new_bucket()}/lake/",
                # Behind HAProxy every client's address is in X-Forwarded-For.
                "TDEDGE_TRUSTED_PROXIES": "127.0.0.1",
            }
            nodes = [Node(free_port(), str(root / f"node{i + 1}")) for i in range(NODES)]
            cluster = cls(
                State(
                    str(root),
                    environ,
                    pg_proc.pid,
                    s3_pid,
                    free_port(),
                    nodes,
                    node_options=list(node_options),
                )
            )
            cluster.save()
            cluster.start_node(0, wait=False)
            # The first node makes the control plane and prints its first keys; the
            # others start once it has, on the same plane.
            cluster.state.master_key, cluster.state.write_key = cluster._first_keys()
            for i in range(1, NODES):
                cluster.start_node(i, wait=False)
            for i in range(NODES):
                cluster.wait_ready(i)
            cluster.start_haproxy()
            cluster.save()
            return cluster
        except BaseException:
            with contextlib.suppress(Exception):
                Cluster.load(root).down()
            if s3_pid:
                seaweed.stop(s3_pid)
            postgres.stop(root / "postgres")
            raise

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.state.environ}

    def start_node(self, i: int, wait: bool = True) -> None:
        node = self.state.nodes[i]
        log = Path(node.data_dir).with_suffix(".log")
        with log.open("a") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tdedge",
                    "serve",
                    "--data-dir",
                    node.data_dir,
                    "--port",
                    str(node.port),
                    *self.state.node_options,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environ(),
                start_new_session=True,
            )
        node.pid = proc.pid
        self.save()
        if wait:
            self.wait_ready(i)

    def _first_keys(self) -> tuple[str, str]:
        log = Path(self.state.nodes[0].data_dir).with_suffix(".log")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            master = re.search(r"master key: (\S+)", text)
            write = re.search(r"write key:\s+(\S+)", text)
            if master and write:
                return master.group(1), write.group(1)
            if not _alive(self.state.nodes[0].pid):
                raise RuntimeError(f"the first node exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError("the first node printed no keys")

    def ready(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.node_url(i)}/readyz", timeout=5) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def wait_ready(self, i: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready(i):
            node = self.state.nodes[i]
            if not _alive(node.pid):
                log = Path(node.data_dir).with_suffix(".log").read_text()
                raise RuntimeError(f"node {i + 1} exited:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {i + 1} not ready in {START_TIMEOUT_S:.0f}s")
            time.sleep(0.5)

    def stop_node(self, i: int, sig: int = signal.SIGTERM) -> None:
        """Signal every process of node ``i`` (SIGTERM drains it; SIGKILL is a crash)
        and wait until they are all gone."""
        stop_group(self.state.nodes[i].pid, sig)

    def start_haproxy(self) -> None:
        env = {
            **os.environ,
            "TDEDGE_LB_BIND": f"127.0.0.1:{self.state.lb_port}",
            **{
                f"TDEDGE_NODE{i + 1}": f"127.0.0.1:{n.port}" for i, n in enumerate(self.state.nodes)
            },
        }
        with (self.root / "haproxy.log").open("a") as out:
            proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(HAPROXY_CFG)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.state.haproxy_pid = proc.pid
        self.save()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5):
                    return
            except (OSError, urllib.error.HTTPError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"HAProxy did not start: {(self.root / 'haproxy.log').read_text()}"
                    ) from None
                time.sleep(0.2)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``tdedge ARGS`` on the shared backends (through the first node's data dir)."""
        return subprocess.run(
            [sys.executable, "-m", "tdedge", *args],
            capture_output=True,
            text=True,
            env={**self.environ(), "TDEDGE_DATA_DIR": self.state.nodes[0].data_dir},
            timeout=120,
            check=False,
        )

    def query(self, sql: str, database: str, through: int = 0) -> list[dict[str, Any]]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tdedge",
                "query",
                "--data-dir",
                self.state.nodes[through].data_dir,
                "--format",
                "json",
                "-d",
                database,
                sql,
            ],
            capture_output=True,
            text=True,
            env=self.environ(),
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"query failed: {done.stderr}")
        rows: list[dict[str, Any]] = msgspec.json.decode(done.stdout)
        return rows

    def status(self) -> list[tuple[str, str]]:
        """(part, state) for every part of the cluster."""
        parts = [
            ("postgres", "running" if _alive(self.state.postgres_pid, group=False) else "stopped"),
            ("s3", "running" if _alive(self.state.s3_pid) else "stopped"),
        ]
        for i, node in enumerate(self.state.nodes):
            if not _alive(node.pid):
                state = "stopped"
            else:
                state = "ready" if self.ready(i) else "running, not ready"
            parts.append((f"node{i + 1} {self.node_url(i)}", state))
        parts.append(
            (f"haproxy {self.url}", "running" if _alive(self.state.haproxy_pid) else "stopped")
        )
        return parts

    def down(self, keep_s3: bool = True) -> None:
        """Stop everything: the balancer, then the nodes (at once, as Ctrl-C does: no
        balancer is left to drain them from), then S3 and PostgreSQL. ``keep_s3``
        False: the S3 server's files are thrown away, so it is killed rather than
        given its ~20 s to stop cleanly."""
        stop_group(self.state.haproxy_pid, signal.SIGTERM)
        for node in self.state.nodes:
            with contextlib.suppress(ProcessLookupError):
                if node.pid:
                    os.killpg(node.pid, signal.SIGINT)
        for node in self.state.nodes:
            stop_group(node.pid, signal.SIGINT)
        if not keep_s3:
            stop_group(self.state.s3_pid, signal.SIGKILL)
        elif self.state.s3_pid:
            seaweed.stop(self.state.s3_pid)
        postgres.stop(self.root / "postgres")


def _check_reachable_by_postgres(root: Path) -> None:
    """As root, PostgreSQL runs as its own user (tests/postgres.py): it must be able to
    reach the state dir, which a private parent folder (/root, a 0700 temporary
    folder) forbids. Say so at once rather than with initdb's error."""
    if os.geteuid() != 0:
        return
    probe = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(root)], check=False
    )
    if probe.returncode != 0:
        raise RuntimeError(
            f"the postgres user cannot reach {root}: choose a state dir whose parent "
            "folders others may enter (e.g. under /tmp or /srv)"
        )


def _alive(pid: int, group: bool = True) -> bool:
    if not pid:
        return False
    # One of our children that ended stays a zombie until it is waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` and wait until it is gone (SIGKILL after
    STOP_TIMEOUT_S)."""
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
