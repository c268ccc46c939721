"""Loader throughput: journal entries → DuckLake rows per second, without the edge.

An in-memory journal holds N envelopes of a small record (5 fields) for one table, in
groups of 64 (a journal row);
the real Loader moves them into a real DuckLake in a temporary folder.

    .venv/bin/python bench/loader.py --records 1000000
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import tempfile
import time
from collections.abc import Mapping

import msgspec

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader


class MemoryReader:
    """A JournalReader over a list of groups, one shard, seq = index + 1."""

    def __init__(self, groups: list[JournalGroup]) -> None:
        self._groups = groups
        self._seqs = [g.seq for g in groups]
        self._ends = list(itertools.accumulate(len(g.envelopes) for g in groups))

    def read(
        self, after: Mapping[str, int], limit: int, max_bytes: int | None = None
    ) -> list[JournalGroup]:
        # The bench's groups are small: the record bound alone decides.
        start = bisect.bisect_right(self._seqs, after.get("s0", 0))
        taken = self._ends[start - 1] if start else 0
        # Whole groups, until about `limit` envelopes.
        stop = bisect.bisect_left(self._ends, taken + limit, lo=start) + 1
        return self._groups[start:stop]

    def release(self, upto: Mapping[str, int]) -> None:
        pass

    def pending(self, after: Mapping[str, int]) -> tuple[int, int | None]:
        start = bisect.bisect_right(self._seqs, after.get("s0", 0))
        if start == len(self._groups):
            return 0, None
        left = self._ends[-1] - (self._ends[start - 1] if start else 0)
        return left, self._groups[start].envelopes[0].received_ms

    def close(self) -> None:
        pass


def journal(n: int, key: str, now_ms: int, group: int) -> list[JournalGroup]:
    """``n`` envelopes in groups of ``group``, as the edge's journal rows hold them."""
    digest = hash_key(key)
    envelopes = []
    for i in range(n):
        record = msgspec.json.encode(
            {
                "time": now_ms // 1000 - 60,
                "user_id": f"u{i % 5000}",
                "event": "page_view" if i % 3 else "click",
                "value": i * 0.5,
                "count": i,
            }
        )
        envelopes.append(Envelope(now_ms, "legacy", "bench", "events", digest, record))
    return [
        JournalGroup("s0", seq, envelopes[start : start + group])
        for seq, start in enumerate(range(0, n, group), start=1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=64, help="envelopes per journal row [64]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(data_dir=root, loader_batch_max_records=args.batch)
        store = ControlStore.open(settings.control_db)
        key = store.create_key(1, "master")
        now = time.time()
        reader = MemoryReader(journal(args.records, key, int(now * 1000), args.group))
        lake = Lake.open(settings)
        loader = Loader(settings, reader, Directory(store, ttl_s=60), lake)
        started, cpu_started = time.perf_counter(), time.process_time()
        rows = 0
        while True:
            report = loader.step(time.time())
            rows += report.rows
            if report.entries == 0:
                break
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        print(f"{rows} rows in {elapsed:.2f} s: {rows / elapsed:,.0f} rows/s (batch {args.batch})")
        # On a shared machine wall time depends on the neighbours; CPU time less so
        # (DuckDB's threads are counted too, so this is a lower bound of the capacity).
        print(f"CPU {cpu:.2f} s: {rows / cpu:,.0f} rows per CPU-second")
        started = time.perf_counter()
        lake.compact(time.time())
        print(f"compaction {time.perf_counter() - started:.2f} s")
        result = lake.query("SELECT count(*), count(DISTINCT user_id) FROM bench.events")
        print("check:", result.rows)
        lake.close()
        store.close()


if __name__ == "__main__":
    main()
