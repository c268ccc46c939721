"""Loader throughput: journal entries → DuckLake rows per second, without the edge.

An in-memory journal holds N envelopes of a small record (5 fields) for one table;
the real Loader moves them into a real DuckLake in a temporary folder.

    .venv/bin/python bench/loader.py --records 1000000
"""

from __future__ import annotations

import argparse
import bisect
import tempfile
import time
from collections.abc import Mapping

import msgspec

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.journal.envelope import Envelope, JournalEntry
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader


class MemoryReader:
    """A JournalReader over a list, one shard, seq = index + 1."""

    def __init__(self, entries: list[JournalEntry]) -> None:
        self._entries = entries
        self._seqs = [e.seq for e in entries]

    def read(self, after: Mapping[str, int], limit: int) -> list[JournalEntry]:
        start = bisect.bisect_right(self._seqs, after.get("s0", 0))
        return self._entries[start : start + limit]

    def release(self, upto: Mapping[str, int]) -> None:
        pass

    def pending(self, after: Mapping[str, int]) -> tuple[int, int | None]:
        start = bisect.bisect_right(self._seqs, after.get("s0", 0))
        left = len(self._entries) - start
        return left, (self._entries[start].envelope.received_ms if left else None)

    def close(self) -> None:
        pass


def envelopes(n: int, key: str, now_ms: int) -> list[JournalEntry]:
    digest = hash_key(key)
    out = []
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
        env = Envelope(now_ms, "legacy", "bench", "events", digest, record)
        out.append(JournalEntry("s0", i + 1, env))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(data_dir=root, loader_batch_max_records=args.batch)
        store = ControlStore.open(settings.control_db)
        key = store.create_key(1, "master")
        now = time.time()
        reader = MemoryReader(envelopes(args.records, key, int(now * 1000)))
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
