"""The JetStream journal against the SQLite journal, in the same run: acknowledged
records/s (as many appends in flight as ``--concurrency``), the p50/p99 of an append at
a fixed rate, and what appends see while the stream's leader is killed -9.

    .venv/bin/python bench/jetstream.py [--seconds 5] [--rate 2000] [--concurrency 256]
                                        [--http]

Starts a throw-away 3-node NATS cluster as the tests do (tests/nats_server.py). The
journals are tdedge's own (``backends.journal``), 200-byte records, one process and
one event loop, as one edge worker; no HTTP. With ``--http``, also a ``tdedge serve``
(one worker) on each journal, one after the other, driven at ``--rate`` postbacks/s by
bench/p13n.py's open-loop client: the p50/p99 a client sees. Every process started
is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import nats_server  # noqa: E402

from tdedge import backends  # noqa: E402
from tdedge.config import Settings  # noqa: E402
from tdedge.journal.base import Journal  # noqa: E402
from tdedge.journal.envelope import Envelope  # noqa: E402

RECORD = b'{"v":"' + b"x" * 190 + b'"}'


def env(i: int) -> Envelope:
    return Envelope(int(time.time() * 1000), "legacy", "db", "t", b"h" * 32, RECORD)


async def throughput(journal: Journal, seconds: float, concurrency: int) -> float:
    done = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            await journal.append(env(done))
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def paced(journal: Journal, seconds: float, rate: int, during: Any = None) -> dict[str, Any]:
    """Appends started at ``rate``/s (1 ms ticks); each one's latency, and errors."""
    latencies: list[float] = []
    errors = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await journal.append(env(i))
        except Exception:
            errors += 1
            return
        latencies.append(time.perf_counter() - started)

    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            tasks.append(asyncio.create_task(one(sent)))
            sent += 1
        if during is not None and now - start > 1.0:
            during()
            during = None
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "sent": sent,
        "acked": len(latencies),
        "errors": errors,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 1),
    }


def run(settings: Settings, args: argparse.Namespace, during: Any = None) -> dict[str, Any]:
    journal = backends.journal(settings)
    try:
        out: dict[str, Any] = {}
        if during is None:
            out["max_records_s"] = round(
                asyncio.run(throughput(journal, args.seconds, args.concurrency))
            )
        out["paced"] = asyncio.run(paced(journal, args.seconds, args.rate, during))
        if during is not None:
            out["state_after"] = journal.state()
        return out
    finally:
        journal.close()


def http(args: argparse.Namespace, cluster_url: str, tmp: Path) -> dict[str, Any]:
    """p50/p99 of postbacks at a fixed rate through a serve on each journal."""
    from harness.children import Children
    from harness.server import Tdedge, create_database
    from p13n import build_paced_c
    from p13n import paced as paced_http

    children = Children()
    client = build_paced_c(tmp)
    out: dict[str, Any] = {}
    try:
        for name, extra in (("sqlite", []), ("jetstream", ["--journal", cluster_url])):
            server = Tdedge(children, tmp / f"http-{name}", tmp, 1, extra=extra)
            server.start(timeout=300)
            try:
                create_database(server.data_dir, "bench_db")
                seconds = int(args.seconds)
                # A first second to warm up (connections, tables), then the run.
                paced_http(
                    server.port, server.write_key, "", args.rate, 1, 32, 10_000, True, client
                )
                run = paced_http(
                    server.port, server.write_key, "", args.rate, seconds, 32, 10_000, True, client
                )
                keep = ("rps", "requests", "p50_ms", "p90_ms", "p99_ms", "max_ms", "non2xx")
                out[name] = {k: run[k] for k in keep}
            finally:
                server.stop()
    finally:
        children.stop_all()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--http", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = run(Settings(data_dir=f"{tmp}/sqlite"), args)
        with nats_server.cluster() as cluster:
            js = Settings(data_dir=f"{tmp}/js", journal=cluster.url)
            results["jetstream"] = run(js, args)
            # The leader killed one second into a paced run, restarted after it.
            killed: list[nats_server.Node] = []
            leader = cluster.leader(js.journal_stream)

            def kill() -> None:
                killed.append(cluster.kill(leader))

            gap_args = argparse.Namespace(**{**vars(args), "seconds": max(args.seconds, 15.0)})
            results["jetstream_leader_killed"] = run(js, gap_args, during=kill)
            cluster.restart(killed[0])
            if args.http:
                results["http"] = http(args, cluster.url, Path(tmp))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
