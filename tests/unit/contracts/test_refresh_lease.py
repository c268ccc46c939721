"""Nodes on one shared control database (PostgreSQL): one node's refresher at a time
computes the batch segments, under the lease; when that node dies, another takes over
within the lease's time; every node's edge gets the facts in its own file.

Each refresher runs in a process of its own, as in a node's loader, and is killed
with SIGKILL: it never lets go of the lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tdedge.config import Settings
from tdedge.control.store import engine_for
from tdedge.lake.lake import Lake
from tdedge.realtime import batch, registry, validation
from tdedge.realtime.batch import SQLiteBatchStore
from tdedge.realtime.batch_shared import SharedBatchStore
from tests import postgres

LEASE_S = 3.0
# Generous: processes start slowly on a loaded machine (the lake's extensions).
WAIT_S = 90.0

CONFIG = """
services:
  - name: web
    database: retail
    event_tables: [pageviews]
    key_columns: [td_client_id]
    segments:
      - {id: "7", name: everyone, refresh: 1s, sql: "SELECT 'u1' AS td_client_id"}
"""

NODE = textwrap.dedent(
    """
    import logging, sys, threading, time
    from tdedge import backends
    from tdedge.config import Settings
    from tdedge.realtime import refresh

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    settings = Settings(data_dir=sys.argv[1], control=sys.argv[2],
                        p13n_refresh_lease_s=float(sys.argv[3]))
    refresh.start(settings, threading.Event(), backends.profiles, backends.registry,
                  backends.refresh_stores)
    while True:
        time.sleep(60)
    """
)


class Node:
    def __init__(self, root: Path, control: str) -> None:
        self.root = root
        self.log = root / "refresher.log"
        settings = Settings(data_dir=str(root), control=control)
        Lake.open(settings).close()  # the lake a node's loader would have made
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", NODE, str(root), control, str(LEASE_S)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def computed(self) -> int:
        return self.log.read_text().count("p13n refreshed")

    def serves(self) -> set[str]:
        path = batch.default_path(self.root)
        if not path.exists():
            return set()
        store = SQLiteBatchStore(path)
        try:
            return set(store.facts("web", ["td_client_id=u1"]).segments)
        finally:
            store.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {WAIT_S} s: {what}")


@pytest.fixture
def control(postgres_server: postgres.Postgres) -> str:
    url = postgres_server.new_database()
    engine = engine_for(url)
    reg = registry.Registry(engine)
    reg.apply(validation.parse(CONFIG), CONFIG)
    reg.close()
    engine.dispose()
    return url


@pytest.fixture
def nodes(control: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    started: list[Node] = []
    try:
        started.append(Node(tmp_path / "a", control))
        started.append(Node(tmp_path / "b", control))
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


def test_one_node_computes_and_another_takes_over_when_it_dies(
    control: str, nodes: tuple[Node, Node]
) -> None:
    a, b = nodes
    shared = SharedBatchStore(engine_for(control))
    try:
        until(lambda: a.computed() + b.computed() >= 3, "three refreshes")
        until(lambda: a.serves() == {"7"} and b.serves() == {"7"}, "both nodes serve it")
        holder, other = (a, b) if a.computed() else (b, a)
        assert other.computed() == 0
        (state,) = shared.sources()
        assert state.refreshed_by is not None
        assert state.refreshed_by.split(":")[1] == str(holder.process.pid)

        os.kill(holder.process.pid, signal.SIGKILL)
        holder.process.wait()
        killed_at = time.monotonic()
        until(lambda: other.computed() >= 2, "the other node computes")
        # Within the lease's time (and a round's), give or take a slow machine.
        assert time.monotonic() - killed_at < LEASE_S + 30
        (state,) = shared.sources()
        assert state.refreshed_by is not None
        assert state.refreshed_by.split(":")[1] == str(other.process.pid)
    finally:
        shared.close()
