"""Many tables: what N one-row tables made over HTTP cost the loader, compaction and
``table/list``.

Starts ``tdedge serve --no-loader`` on a fresh temp data dir and creates N one-row
tables in one database with POSTs to the legacy door (a master key creates the
database). Then the real Loader runs in this process, in a thread, compacting every
``--compaction-interval`` seconds, while a record goes to another table every 0.25 s:

- load: seconds until every table is loaded;
- compaction: the duration of each pass (the first ones flush every table's inlined
  row), and how long the loader did not commit while one ran;
- freshness: for each probe record, seconds from its 200 to being queryable, while
  the passes run (the median, and the worst);
- ``table/list`` over the REST API, and ``database/list``.

Each table gets a second row just before the probes start, so every pass has work.

    .venv/bin/python bench/many_tables.py --tables 2000
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.store import ControlStore
from tdedge.journal.sqlite import SQLiteJournalReader
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader

DATABASE = "many"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_edge(root: Path, port: int) -> subprocess.Popen[bytes]:
    log = (root / "serve.log").open("ab")
    command = [sys.executable, "-m", "tdedge", "serve", "--data-dir", str(root / "data")]
    command += ["--port", str(port), "--no-loader"]
    proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("serve did not start")


def post_tables(client: httpx.Client, url: str, key: str, n: int, round_: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        r = client.post(
            f"{url}/postback/v3/event/{DATABASE}/t{i}",
            json={"i": i, "round": round_},
            headers={"X-TD-Write-Key": key},
        )
        r.raise_for_status()
    return time.perf_counter() - started


class TimedLoader(Loader):
    """The real loader, noting when each compaction pass and each commit happened."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.passes: list[tuple[float, float]] = []  # (start, end), monotonic
        self.commits: list[float] = []

    def compact(self, now: float) -> None:
        started = time.monotonic()
        super().compact(now)
        self.passes.append((started, time.monotonic()))

    def step(self, now: float) -> Any:
        report = super().step(now)
        if report.entries:
            self.commits.append(time.monotonic())
        return report


def longest_gap(commits: list[float], since: float, until: float) -> float:
    """The longest time in [since, until] without a commit."""
    times = [since, *(t for t in commits if since < t < until), until]
    return max(b - a for a, b in itertools.pairwise(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=2000)
    parser.add_argument("--compaction-interval", type=float, default=5.0)
    parser.add_argument(
        "--watch", type=float, default=30.0, help="seconds of probes after the second rows"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            data_dir=str(root / "data"), compaction_interval_s=args.compaction_interval
        )
        store = ControlStore.open(settings.control_db)
        store.ensure_account(1)
        key = store.create_key(1, "master")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        edge = start_edge(root, port)
        stop = threading.Event()
        lake: Lake | None = None
        thread: threading.Thread | None = None
        try:
            with httpx.Client() as client:
                took = post_tables(client, url, key, args.tables, 1)
                print(f"made {args.tables} one-row tables over HTTP in {took:.1f} s")
                lake = Lake.open(settings)
                reader = SQLiteJournalReader(settings.journal_dir)
                loader = TimedLoader(settings, reader, Directory(store, ttl_s=60), lake)
                started = time.monotonic()
                thread = threading.Thread(target=loader.run, args=(stop,), daemon=True)
                thread.start()
                watcher = Lake.open(settings, read_only=True)
                while len(watcher.tables(DATABASE)) < args.tables:
                    time.sleep(0.2)
                print(f"loaded them in {time.monotonic() - started:.1f} s")
                took = post_tables(client, url, key, args.tables, 2)
                print(f"a second row for each table in {took:.1f} s")
                watch_from = time.monotonic()
                passes_before = len(loader.passes)
                latencies = probe(client, url, key, watcher, watch_from + args.watch)
                watch_to = time.monotonic()
                watcher.close()
                api = {"Host": "api.localhost", "Authorization": f"TD1 {key}"}
                t0 = time.perf_counter()
                listed = client.get(f"{url}/v3/table/list/{DATABASE}", headers=api, timeout=600)
                table_list = time.perf_counter() - t0
                t0 = time.perf_counter()
                client.get(f"{url}/v3/database/list", headers=api, timeout=600)
                database_list = time.perf_counter() - t0
            passes = [end - start for start, end in loader.passes]
            print(f"compaction passes (s): {', '.join(f'{p:.2f}' for p in passes) or 'none'}")
            during = loader.passes[passes_before:]
            print(f"passes while probing: {len(during)}")
            gap = longest_gap(loader.commits, watch_from, watch_to)
            print(f"longest time without a commit while probing: {gap:.2f} s")
            print(
                f"freshness of {len(latencies)} probes: median {statistics.median(latencies):.2f}"
                f" s, max {max(latencies):.2f} s"
            )
            n = len(listed.json().get("tables", []))
            print(f"table/list: {table_list:.2f} s ({n} tables)")
            print(f"database/list: {database_list:.2f} s")
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=600)
            if lake is not None:
                lake.close()
            store.close()
            os.killpg(edge.pid, signal.SIGTERM)
            edge.wait(timeout=30)


def probe(client: httpx.Client, url: str, key: str, watcher: Lake, until: float) -> list[float]:
    """A record to table ``fresh`` every 0.25 s until ``until``; each one's freshness."""
    latencies: list[float] = []
    sent: dict[int, float] = {}
    i = 0
    while time.monotonic() < until or sent:
        if time.monotonic() < until:
            client.post(
                f"{url}/postback/v3/event/{DATABASE}/fresh",
                json={"probe": i},
                headers={"X-TD-Write-Key": key},
            ).raise_for_status()
            sent[i] = time.monotonic()
            i += 1
        if DATABASE in watcher.databases() and "fresh" in watcher.tables(DATABASE):
            seen = watcher.query(f"SELECT probe FROM {DATABASE}.fresh").rows
            now = time.monotonic()
            for (p,) in seen:
                if p in sent:
                    latencies.append(now - sent.pop(p))
        time.sleep(0.25)
    return latencies


if __name__ == "__main__":
    main()
