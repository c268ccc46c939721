"""The JetStream journal against the SQLite journal, in the same run and in alternating
rounds, each figure a median of its rounds and each ratio the median of the rounds'
ratios (this machine's speed moves by up to twice within an hour):

- the journals alone (one process, one event loop, as one edge worker; no HTTP;
  200-byte records): acknowledged appends/s with ``--concurrency`` in flight, and the
  p50/p99 of an append at ``--rate``/s;
- with ``--http``, the edge: a ``tdedge serve --no-loader`` (one worker; ``--loader``
  runs its loader too) on each journal, both up for the whole run, driven in turn:
  its maximum postbacks/s (wrk ``-t2``, ``--conns`` keep-alive connections), also per
  CPU-second of the serve's own processes, and its p50/p99 at ``--rate`` postbacks/s
  (bench/p13n.py's open-loop client, latency counted from when a request was due);
- once, after the rounds: what appends see while the stream's leader is killed -9.

    .venv/bin/python bench/jetstream.py [--seconds 5] [--rate 2000] [--concurrency 256]
                                        [--rounds 3] [--http] [--conns 64]
                                        [--parts journals,edge] [--loader]

Starts a throw-away 3-node NATS cluster as the tests do (tests/nats_server.py) on the
same cores as everything else: each append is stored by three servers here, where a
deployment gives each its own machine. Every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import nats_server  # noqa: E402

from harness.children import process_cpu_s  # noqa: E402
from harness.stats import median_ratio  # noqa: E402
from tdedge import backends  # noqa: E402
from tdedge.config import Settings  # noqa: E402
from tdedge.journal.base import Journal  # noqa: E402
from tdedge.journal.envelope import Envelope  # noqa: E402

RECORD = b'{"v":"' + b"x" * 190 + b'"}'
NAMES = ("sqlite", "jetstream")
# The journals-alone runs use a stream of their own: the serves' loaders never see
# (and spend CPU refusing) records of a database that does not exist.
APPENDS_STREAM = "TDEDGE_BENCH_APPENDS"
# The goals, for the edge, as ratios of JetStream to SQLite: its maximum rate at least,
# its p99 at a fixed rate at most.
GOALS = {"max_rps": 0.7, "p99_ms": 2.0}


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


def rounds(
    count: int, measure: Callable[[str], dict[str, Any]], figures: tuple[str, ...]
) -> dict[str, Any]:
    """``measure(name)`` for each journal, ``count`` rounds, the order flipped each round
    (so neither always runs on a machine warmed or slowed by the other): each of
    ``figures``' medians, and the median over the rounds of JetStream ÷ SQLite."""
    per_round: list[dict[str, dict[str, Any]]] = []
    for r in range(count):
        order = NAMES if r % 2 == 0 else NAMES[::-1]
        got = {name: measure(name) for name in order}
        per_round.append(got)
        print(f"round {r + 1}: {json.dumps(got)}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"rounds": per_round}
    for name in NAMES:
        out[name] = {k: statistics.median(rnd[name][k] for rnd in per_round) for k in figures}
    ratios = {
        k: median_ratio((rnd["jetstream"][k], rnd["sqlite"][k]) for rnd in per_round)
        for k in figures
    }
    out["jetstream_over_sqlite"] = {
        k: None if r is None else round(r, 2) for k, r in ratios.items()
    }
    return out


def journals(args: argparse.Namespace, cluster: nats_server.Cluster, tmp: Path) -> dict[str, Any]:
    # Nothing loads what these journals take: no bound on their backlog.
    unbounded = 10**12
    settings = {
        "sqlite": Settings(data_dir=str(tmp / "sqlite"), journal_max_backlog=unbounded),
        "jetstream": Settings(
            data_dir=str(tmp / "js"),
            journal=cluster.url,
            journal_stream=APPENDS_STREAM,
            journal_max_backlog=unbounded,
        ),
    }
    opened = {name: backends.journal(s) for name, s in settings.items()}
    try:

        def measure(name: str) -> dict[str, Any]:
            journal = opened[name]
            most = asyncio.run(throughput(journal, args.seconds, args.concurrency))
            at_rate = asyncio.run(paced(journal, args.seconds, args.rate))
            return {"max_records_s": round(most), **at_rate}

        out = rounds(
            args.rounds,
            measure,
            ("max_records_s", "p50_ms", "p99_ms"),
        )
        # The leader killed one second into a paced run, restarted after it.
        killed: list[nats_server.Node] = []
        leader = cluster.leader(APPENDS_STREAM)

        def kill() -> None:
            killed.append(cluster.kill(leader))

        gap = asyncio.run(
            paced(opened["jetstream"], max(args.seconds, 15.0), args.rate, during=kill)
        )
        out["jetstream_leader_killed"] = {**gap, "state_after": opened["jetstream"].state()}
        cluster.restart(killed[0])
        return out
    finally:
        for journal in opened.values():
            journal.close()


def nats_cpu_s(cluster: nats_server.Cluster) -> float:
    """CPU seconds the cluster's servers have used so far."""
    return sum(process_cpu_s(node.proc.pid) for node in cluster.nodes if node.proc is not None)


def http(args: argparse.Namespace, cluster: nats_server.Cluster, tmp: Path) -> dict[str, Any]:
    """The edge on each journal: its most postbacks/s and its p50/p99 at ``--rate``."""
    from harness.children import Children
    from harness.server import Tdedge, create_database
    from harness.wrk import run_wrk
    from p13n import POSTBACK_LUA, build_paced_c
    from p13n import paced as paced_http

    children = Children()
    client = build_paced_c(tmp)
    servers: dict[str, Tdedge] = {}
    try:
        for name, extra in (("sqlite", []), ("jetstream", ["--journal", cluster.url])):
            server = Tdedge(children, tmp / f"http-{name}", tmp, 1, loader=args.loader, extra=extra)
            server.start(timeout=300)
            create_database(server.data_dir, "bench_db")
            # A first second to warm up (connections, tables).
            paced_http(server.port, server.write_key, "", args.rate, 1, 32, 10_000, True, client)
            server.settle()
            servers[name] = server
        seconds = int(args.seconds)
        runs = 0

        def measure(name: str) -> dict[str, Any]:
            nonlocal runs
            runs += 1
            server = servers[name]
            script = POSTBACK_LUA % {"ids": 10_000, "key": server.master_key}
            nats_before = nats_cpu_s(cluster)
            most = run_wrk(
                f"{name}-{runs}",
                server.url,
                script,
                seconds,
                tmp,
                conns=args.conns,
                timeout=None,
                server_pgid=server.pgid,
            )
            nats_used = nats_cpu_s(cluster) - nats_before
            at_rate = paced_http(
                server.port, server.write_key, "", args.rate, seconds, 32, 10_000, True, client
            )
            return {
                "max_rps": round(most.rps),
                # Requests per CPU-second of the serve's own processes (with --loader, its
                # loader's too): its rate on cores of its own, the NATS servers elsewhere.
                "max_rps_per_cpu_s": round(most.per_cpu_s),
                "max_nats_cpu_s": round(nats_used, 2),
                "max_p99_ms": round(most.p99_ms, 2),
                "max_errors": most.non2xx + most.socket_errors,
                **{k: at_rate[k] for k in ("rps", "p50_ms", "p99_ms", "max_ms", "non2xx")},
            }

        return rounds(
            args.rounds,
            measure,
            ("max_rps", "max_rps_per_cpu_s", "p50_ms", "p99_ms"),
        )
    finally:
        for server in servers.values():
            server.stop()
        children.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--parts", default="journals", help="comma-separated: journals, edge (--http: both)"
    )
    parser.add_argument("--http", action="store_true", help="the same as --parts journals,edge")
    parser.add_argument("--conns", type=int, default=64, help="wrk's connections (--http)")
    parser.add_argument(
        "--loader",
        action="store_true",
        help="run each serve's loader too (by default the edge alone: --no-loader)",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, nats_server.cluster() as cluster:
        parts = {*args.parts.split(","), *(("journals", "edge") if args.http else ())}
        if "journals" in parts:
            results["journals"] = journals(args, cluster, Path(tmp))
        if "edge" in parts:
            results["edge"] = http(args, cluster, Path(tmp))
    print(json.dumps(results, indent=1))
    if "edge" in results:
        ratios = results["edge"]["jetstream_over_sqlite"]
        for key, goal in GOALS.items():
            r = ratios[key]
            better = r is not None and (r >= goal if key.startswith("max_") else r <= goal)
            sign = "≥" if key.startswith("max_") else "≤"
            verdict = "PASS" if better else "MISS"
            print(f"edge {key}: JetStream/SQLite {r} (goal {sign} {goal}) {verdict}")


if __name__ == "__main__":
    main()
