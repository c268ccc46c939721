"""Many tables: what N one-row tables made over HTTP cost the loader, compaction and
``table/list``.

Starts ``tdedge serve --no-loader`` on a fresh temp data dir and creates N one-row
tables in one database with POSTs to the legacy door (a master key creates the
database). Then the real Loader runs in this process, in a thread, compacting every
``--compaction-interval`` seconds, while a record goes to another table every 0.25 s:

- load: seconds until every table is loaded;
- compaction: the duration of each pass (the first ones flush every table's inlined
  row), and how long the loader did not commit while one ran;
- freshness: for each probe record, seconds from its 200 to the end of the commit
  that holds it, while the passes run (the median, and the worst);
- ``table/list`` over the REST API, and ``database/list``.

Each table gets a second row, loaded before the probes start, so that a pass has every
table to flush while they run.

    .venv/bin/python bench/many_tables.py --tables 2000
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from harness.children import Children
from harness.server import Tdedge
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.store import ControlStore
from tdedge.journal.sqlite import SQLiteJournalReader
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader

DATABASE = "many"


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


class TimedLake(Lake):
    """The real lake, noting how long each compaction pass and each slice of it took
    (a pass run at once, as before compaction worked in slices, is one slice)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.passes: list[tuple[float, float]] = []  # (start, end), monotonic
        self.longest_slice = 0.0
        self.slices = 0

    def compaction(
        self,
        now: float,
        slice_s: float = math.inf,
        expiries: Mapping[tuple[str, str], int] | None = None,
    ) -> Iterator[Any]:
        started = last = time.monotonic()
        for done in super().compaction(now, slice_s, expiries):
            self.longest_slice = max(self.longest_slice, time.monotonic() - last)
            self.slices += 1
            yield done
            last = time.monotonic()
        self.passes.append((started, time.monotonic()))

    def compact(self, now: float) -> None:
        if hasattr(Lake, "compaction"):
            super().compact(now)
            return
        started = time.monotonic()
        super().compact(now)
        self.passes.append((started, time.monotonic()))
        self.longest_slice = max(self.longest_slice, time.monotonic() - started)


class TimedLoader(Loader):
    """The real loader, noting when each commit happened and which probe records
    (table ``fresh``) it held."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.commits: list[float] = []
        self.rows = 0
        self.committed: dict[int, float] = {}  # probe → when its commit was done
        self._probes: list[int] = []

    def _shape(self, routed: Any, *args: Any) -> Any:
        found = routed.tables.get((DATABASE, "fresh"))
        self._probes = [] if found is None else [r["probe"] for r in found.records]
        return super()._shape(routed, *args)

    def step(self, now: float) -> Any:
        self._probes = []
        report = super().step(now)
        if report.entries:
            done = time.monotonic()
            self.commits.append(done)
            self.rows += report.rows
            for p in self._probes:
                self.committed.setdefault(p, done)
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
        # Room for every table: the point is what N tables cost (older versions of
        # tdedge had no per-account limit, and no such setting).
        room = {"max_tables_per_account": args.tables + 10}
        settings = Settings(
            data_dir=str(root / "data"),
            compaction_interval_s=args.compaction_interval,
            **(room if "max_tables_per_account" in Settings.__struct_fields__ else {}),
        )
        store = ControlStore.open(settings.control_db)
        store.ensure_account(1)
        key = store.create_key(1, "master")
        children = Children()
        edge = Tdedge(children, root / "data", root, loader=False)
        edge.write_key = edge.master_key = key  # made above: serve prints no keys
        stop = threading.Event()
        lake = TimedLake.open(settings)
        thread: threading.Thread | None = None
        try:
            edge.start()
            url = edge.url
            with httpx.Client() as client:
                took = post_tables(client, url, key, args.tables, 1)
                print(f"made {args.tables} one-row tables over HTTP in {took:.1f} s")
                reader = SQLiteJournalReader(settings.journal_dir)
                loader = TimedLoader(settings, reader, Directory(store, ttl_s=60), lake)
                started = time.monotonic()
                thread = threading.Thread(target=loader.run, args=(stop,), daemon=True)
                thread.start()
                while loader.rows < args.tables:
                    time.sleep(0.1)
                print(f"loaded them in {time.monotonic() - started:.1f} s")
                started = time.monotonic()
                took = post_tables(client, url, key, args.tables, 2)
                print(f"a second row for each table in {took:.1f} s")
                while loader.rows < 2 * args.tables:
                    time.sleep(0.1)
                print(f"loaded them {time.monotonic() - started - took:.1f} s after")
                watch_from = time.monotonic()
                passes_before = len(lake.passes)
                sent = probe(client, url, key, watch_from + args.watch)
                watch_to = time.monotonic()
                while len(loader.committed) < len(sent) and time.monotonic() < watch_to + 600:
                    time.sleep(0.1)
                api = {"Host": "api.localhost", "Authorization": f"TD1 {key}"}
                t0 = time.perf_counter()
                listed = client.get(f"{url}/v3/table/list/{DATABASE}", headers=api, timeout=600)
                table_list = time.perf_counter() - t0
                t0 = time.perf_counter()
                client.get(f"{url}/v3/database/list", headers=api, timeout=600)
                database_list = time.perf_counter() - t0
            passes = [end - start for start, end in lake.passes]
            print(f"compaction passes (s): {', '.join(f'{p:.2f}' for p in passes) or 'none'}")
            print(f"passes begun while probing: {len(lake.passes[passes_before:])}")
            print(f"longest compaction slice (loading waits for it): {lake.longest_slice:.2f} s")
            print(f"compaction slices in all: {lake.slices or len(passes)}")
            gap = longest_gap(loader.commits, watch_from, watch_to)
            print(f"longest time without a commit while probing: {gap:.2f} s")
            latencies = [loader.committed[p] - t for p, t in sent.items() if p in loader.committed]
            print(
                f"freshness of {len(latencies)}/{len(sent)} probes (200 to committed): "
                f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
            )
            n = len(listed.json().get("tables", []))
            print(f"table/list: {table_list:.2f} s ({n} tables)")
            print(f"database/list: {database_list:.2f} s")
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=600)
            lake.close()
            store.close()
            children.stop_all()


def probe(client: httpx.Client, url: str, key: str, until: float) -> dict[int, float]:
    """A record to table ``fresh`` every 0.25 s until ``until``: probe → when its 200 came."""
    sent: dict[int, float] = {}
    i = 0
    while time.monotonic() < until:
        client.post(
            f"{url}/postback/v3/event/{DATABASE}/fresh",
            json={"probe": i},
            headers={"X-TD-Write-Key": key},
        ).raise_for_status()
        sent[i] = time.monotonic()
        i += 1
        time.sleep(0.25)
    return sent


if __name__ == "__main__":
    main()
