"""What Redis's ``appendfsync`` costs the Redis profile store: decisions/s of
``RedisProfileStore.run`` (stitch + count one event, as the contract tests' work does)
in groups of 1 and 32, against a throw-away Redis with ``everysec`` and one with
``always``, in the same run.

    .venv/bin/python bench/redis_fsync.py [--seconds 3] [--ids 10000]

No HTTP, no journal: the store alone, one process. Every process started is stopped.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.redis_server import start_redis
from tdedge.realtime.attributes import CounterAttribute
from tdedge.realtime.redis import RedisProfileStore
from tdedge.realtime.store import ProfileTx, Resolution

COUNTER = CounterAttribute("n")


def work(key: str, now: int) -> Callable[[ProfileTx], Resolution]:
    def run(tx: ProfileTx) -> Resolution:
        found = tx.resolve("web", [key], now)
        COUNTER.update(found.profile, {}, now)
        tx.save("web", found.profile)
        return found

    return run


def measure(url: str, group: int, seconds: float, ids: int) -> tuple[float, float]:
    """Decisions/s, and this process's CPU µs per decision (what the engine would pay,
    less sensitive to a loaded machine than the rate)."""
    store = RedisProfileStore(url)
    rng = random.Random(1)
    done = 0
    try:
        end = time.monotonic() + seconds
        now = int(time.time() * 1000)
        cpu = time.process_time()
        while time.monotonic() < end:
            keys = [f"td_client_id=c{rng.randrange(ids)}" for _ in range(group)]
            # As the engine does: the group's keys are named up front, read at once.
            store.run([work(k, now) for k in keys], [("web", keys)])
            done += group
        return done / seconds, (time.process_time() - cpu) / done * 1e6
    finally:
        store.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--ids", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved; medians")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="redis-fsync-"))
    procs = []
    try:
        ports = {}
        for fsync in ("everysec", "always"):
            proc, ports[fsync] = start_redis(tmp / fsync, fsync)
            procs.append(proc)
        # Rounds interleave the settings: a loaded machine slows them alike.
        rates: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for group in (1, 32):
                for fsync, port in ports.items():
                    url = f"redis://127.0.0.1:{port}/0"
                    found = measure(url, group, args.seconds, args.ids)
                    rates.setdefault((group, fsync), []).append(found)
        for (group, fsync), runs in rates.items():
            print(
                f"appendfsync {fsync:8} group {group:2}: "
                f"{statistics.median(r for r, _ in runs):8,.0f} decisions/s, "
                f"{statistics.median(c for _, c in runs):5.0f} µs CPU per decision "
                f"(medians of {len(runs)})"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
