#!/usr/bin/env python3
"""Hostile-input bench: what a flood of each hostile shape costs a well-behaved client.

Run it as ``bench/hostile [--seconds 10] [--shapes wide,deep,…]`` (see bench/README.md).

One ``tdedge serve`` (default options, plus an api port for bulk imports) on a fresh data
dir. A well-behaved client sends small Postback records at a fixed rate (``--rate``, an
open loop: latency counts from when each request was due) and its p99 is measured
twice per shape, interleaved: alone for ``--seconds``, then while one hostile shape
floods the server for ``--seconds``. Each flood is bounded in time and count, sent only
to 127.0.0.1, from another process and another address (127.0.0.2) than the client's.
Meanwhile the bench samples, every 0.25 s, the resident memory of every
process of the server (edge workers, loader, job runner, engine) and the loader's lag
from /metrics, and measures how much the journal and the lake grew on disk.

Figures per shape, with the issue's targets (reported, never asserted):
the client's p99 under the flood ÷ its p99 alone (≤ 3), the longest time loading
stopped — the loader's lag in seconds at its highest (≤ 5 s; records waiting for a new
table, which a flood of new tables makes for itself, are reported apart), the largest edge worker
(< 512 MiB) and loader (< 1 GiB) resident set, and the journal's and the lake's growth
next to the bytes the flood got accepted. After each flood the bench waits for the
loader to catch up with what the flood left (new tables, a lag), measuring the good
client meanwhile: that after-effect is reported as the flood's own (p99 while catching
up, and how long it took), and the next shape starts from a calm server.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import multiprocessing
import os
import queue
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BenchError, log
from harness.children import Children, members, rss
from harness.metrics import scrape
from harness.ports import HOST
from harness.server import Tdedge, create_database
from harness.stats import percentile

MiB = 1024 * 1024
TARGET_P99_RATIO = 3.0
TARGET_LOADING_STOP_S = 5.0
TARGET_EDGE_RSS = 512 * MiB
TARGET_LOADER_RSS = 1024 * MiB
GOOD_BODY = b'{"param1":"value1","param2":1234}'
# The floods come from another loopback address than the good client, as an attacker
# does: the server tells clients apart by address.
ATTACKER = "127.0.0.2"


@dataclass
class Target:
    main: int
    records: int
    api: int
    write_key: str
    master_key: str


# ---------------------------------------------------------------------------------------
# The well-behaved client.


def paced_client(port: int, key: str, rate: float, seconds: float) -> list[float]:
    """Latencies (s) of Postback requests sent every 1/rate s, counted from when each was
    due; a request the server never answers counts as ``seconds``."""
    latencies: list[float] = []
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": key}
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            conn.request("POST", "/postback/v3/event/bench_db/good", GOOD_BODY, headers)
            conn.getresponse().read()
            latencies.append(time.monotonic() - due)
        except (OSError, http.client.HTTPException):
            latencies.append(seconds)
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.close()
    return latencies


# ---------------------------------------------------------------------------------------
# Hostile shapes: each floods until ``stop`` is set, counts the answers it got and the
# bytes the server accepted with a 200.


@dataclass
class Flood:
    statuses: Counter[str] = field(default_factory=Counter)
    accepted_bytes: int = 0

    def send(self, port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=30, source_address=(ATTACKER, 0))
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            response.read()
            self.statuses[str(response.status)] += 1
            if response.status == 200:
                self.accepted_bytes += len(body)
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            self.statuses[type(e).__name__] += 1


Stop = threading.Event | Any  # a multiprocessing Event in the attacker's process


def _repeat(flood: Flood, stop: Stop, limit: int, send: Callable[[int], None]) -> None:
    for i in range(limit):
        if stop.is_set():
            return
        send(i)


def wide(t: Target, flood: Flood, stop: Stop) -> None:
    body = json.dumps({f"k{i}": i for i in range(2_000)}).encode()
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": t.write_key}
    _repeat(
        flood,
        stop,
        500,
        lambda i: flood.send(
            t.main, "POST", f"/postback/v3/event/bench_db/wide{i % 2}", body, headers
        ),
    )


def deep(t: Target, flood: Flood, stop: Stop) -> None:
    body = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": t.write_key}
    _repeat(
        flood,
        stop,
        2_000,
        lambda _: flood.send(t.main, "POST", "/postback/v3/event/bench_db/deep", body, headers),
    )


def gzip_members(t: Target, flood: Flood, stop: Stop) -> None:
    member = gzip.compress(b"")
    body = member * (5 * MiB // len(member))
    headers = {
        "Content-Type": "application/vnd.treasuredata.v1+json",
        "Content-Encoding": "gzip",
        "Authorization": "TD1 1/made-up",
    }
    _repeat(flood, stop, 50, lambda _: flood.send(t.records, "POST", "/bench_db/gz", body, headers))


def made_up_keys(t: Target, flood: Flood, stop: Stop) -> None:
    body = json.dumps({"pad": "x" * (256 * 1024)}).encode()

    def send(_: int) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-TD-Write-Key": f"1/{secrets.token_hex(8)}",
        }
        flood.send(t.main, "POST", "/postback/v3/event/bench_db/keys", body, headers)

    _repeat(flood, stop, 5_000, send)


def many_tables(t: Target, flood: Flood, stop: Stop) -> None:
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": t.write_key}
    _repeat(
        flood,
        stop,
        2_000,
        lambda i: flood.send(
            t.main, "POST", f"/postback/v3/event/bench_db/t{i}", b'{"a":1}', headers
        ),
    )


def bulk_bomb(t: Target, flood: Flood, stop: Stop) -> None:
    # One 400 MiB record (a msgpack map whose value is one long string), ~400 KB gzipped.
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = b"x" * MiB
    parts = [z.compress(b"\x81\xa1a\xdb" + (400 * MiB).to_bytes(4, "big"))]
    parts.extend(z.compress(chunk) for _ in range(400))
    parts.append(z.flush())
    big = b"".join(parts)
    headers = {"Authorization": f"TD1 {t.write_key}", "Content-Type": "application/octet-stream"}
    _repeat(
        flood,
        stop,
        3,
        lambda _: flood.send(
            t.api, "PUT", "/v3/table/import/bench_db/bomb/msgpack.gz", big, headers
        ),
    )


def _hold(sockets: list[socket.socket], stop: Stop, trickle: bytes) -> None:
    while not stop.wait(1.0):
        for s in list(sockets):
            try:
                s.send(trickle)
            except OSError:
                sockets.remove(s)
    for s in sockets:
        s.close()


def slow_headers(t: Target, flood: Flood, stop: Stop) -> None:
    sockets = []
    for _ in range(600):
        try:
            s = socket.create_connection((HOST, t.main), timeout=5, source_address=(ATTACKER, 0))
            s.send(b"POST /postback/v3/event/bench_db/slow HTTP/1.1\r\nHost: x\r\n")
            sockets.append(s)
            flood.statuses["opened"] += 1
        except OSError as e:
            flood.statuses[type(e).__name__] += 1
    _hold(sockets, stop, b"X-a: b\r\n")


def slow_bodies(t: Target, flood: Flood, stop: Stop) -> None:
    sockets = []
    head = (
        "POST /postback/v3/event/bench_db/slow HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nX-TD-Write-Key: {t.write_key}\r\n"
        "Content-Length: 100000\r\n\r\n{"
    ).encode()
    for _ in range(600):
        try:
            s = socket.create_connection((HOST, t.main), timeout=5, source_address=(ATTACKER, 0))
            s.send(head)
            sockets.append(s)
            flood.statuses["opened"] += 1
        except OSError as e:
            flood.statuses[type(e).__name__] += 1
    _hold(sockets, stop, b" ")


SHAPES: dict[str, Callable[[Target, Flood, Stop], None]] = {
    "wide": wide,
    "deep": deep,
    "gzip_members": gzip_members,
    "made_up_keys": made_up_keys,
    "many_tables": many_tables,
    "bulk_bomb": bulk_bomb,
    "slow_headers": slow_headers,
    "slow_bodies": slow_bodies,
}


# ---------------------------------------------------------------------------------------
# What the server spends: memory per process, the loader's lag, disk.


@dataclass
class Sample:
    rss: dict[str, int] = field(default_factory=dict)  # role → largest resident set
    lag_s: float = 0.0  # the loader's lag at its highest
    # The oldest record waiting for its new table to be created, at its highest: the
    # flood's own records, when it makes new tables faster than the loader creates them.
    new_table_wait_s: float = 0.0


def sample(group: int, api: int, stop: Stop, results: Any) -> None:
    """Sample until ``stop``, then put the Sample in ``results``; /metrics answers on the
    operators' (api) port only. Runs in a process of its own: walking /proc and parsing
    the metrics in the good client's process took its GIL for milliseconds at a time,
    which showed as the server's latency."""
    into = Sample()
    while not stop.wait(0.25):
        for m in members(group):
            into.rss[m.role] = max(into.rss.get(m.role, 0), rss(m.pid))
        with contextlib.suppress(OSError, ValueError, BenchError):
            metrics = scrape(f"http://{HOST}:{api}/metrics")
            into.lag_s = max(into.lag_s, metrics.get("tdedge_loader_lag_seconds", 0.0))
            into.new_table_wait_s = max(
                into.new_table_wait_s, metrics.get("tdedge_loader_new_tables_wait_seconds", 0.0)
            )
    results.put(into)


def commits(api: int) -> tuple[float, float]:
    """(journal group commits so far, how many of them took more than 50 ms): whether
    the good client's tail comes from the journal's fsync (the disk) or elsewhere."""
    with contextlib.suppress(OSError, ValueError, BenchError):
        m = scrape(f"http://{HOST}:{api}/metrics")
        total = m.get("tdedge_journal_commit_seconds_count", 0.0)
        return total, total - m.get('tdedge_journal_commit_seconds_bucket{le="0.05"}', 0.0)
    return 0.0, 0.0


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


# ---------------------------------------------------------------------------------------


def attack(name: str, t: Target, stop: Stop, results: Any) -> None:
    flood = Flood()
    SHAPES[name](t, flood, stop)
    results.put(flood)


def run_shape(name: str, server: Tdedge, t: Target, args: argparse.Namespace) -> dict[str, Any]:
    c0 = commits(t.api)
    alone = paced_client(t.main, t.write_key, args.rate, args.seconds)
    c1 = commits(t.api)
    journal0, lake0 = du(server.data_dir / "journal"), du(server.data_dir / "lake")
    # The attacker and the watcher in processes of their own: in threads they would share
    # the good client's GIL, and their CPU time would show as the server's latency.
    context = multiprocessing.get_context("fork")
    stop, samples = context.Event(), context.Queue()
    watcher = context.Process(target=sample, args=(server.pgid, t.api, stop, samples), daemon=True)
    halt, results = context.Event(), context.Queue()
    attacker = context.Process(target=attack, args=(name, t, halt, results), daemon=True)
    watcher.start()
    attacker.start()
    time.sleep(0.5)  # the flood first
    c2 = commits(t.api)
    under = paced_client(t.main, t.write_key, args.rate, args.seconds)
    c3 = commits(t.api)
    halt.set()
    try:
        flood = results.get(timeout=60)
    except queue.Empty:
        flood = Flood(Counter({"attacker did not finish": 1}))
    attacker.join(timeout=10)
    time.sleep(args.settle)  # let the loader take what was accepted, still sampling
    after, caught_up_s = aftermath(t, args)
    stop.set()
    try:
        seen = samples.get(timeout=30)
    except queue.Empty:
        seen = Sample()
    watcher.join(timeout=5)
    p99_alone = percentile(alone, 99) * 1000
    p99_under = percentile(under, 99) * 1000
    p99_after = percentile(after, 99) * 1000 if after else None
    edge = seen.rss.get("edge", 0)
    loader = seen.rss.get("loader", 0)
    return {
        "shape": name,
        "p99_alone_ms": round(p99_alone, 2),
        "p99_flood_ms": round(p99_under, 2),
        "ratio": round(p99_under / p99_alone, 2) if p99_alone else None,
        "loader_lag_max_s": round(seen.lag_s, 2),
        "new_table_wait_max_s": round(seen.new_table_wait_s, 2),
        # After the flood and the settle, until the loader had caught up: the good
        # client's p99 meanwhile (None if it had already), and how long that took.
        "p99_after_ms": round(p99_after, 2) if p99_after is not None else None,
        "caught_up_s": round(caught_up_s, 1),
        # Journal commits, and those over 50 ms, while the good client was measured.
        "commits_alone": [int(c1[0] - c0[0]), int(c1[1] - c0[1])],
        "commits_flood": [int(c3[0] - c2[0]), int(c3[1] - c2[1])],
        "edge_rss_mib": round(edge / MiB),
        "loader_rss_mib": round(loader / MiB),
        "journal_growth_mib": round((du(server.data_dir / "journal") - journal0) / MiB, 1),
        "lake_growth_mib": round((du(server.data_dir / "lake") - lake0) / MiB, 1),
        "accepted_mib": round(flood.accepted_bytes / MiB, 1),
        "answers": dict(flood.statuses),
        "pass": (
            p99_alone > 0
            and p99_under / p99_alone <= TARGET_P99_RATIO
            and seen.lag_s <= TARGET_LOADING_STOP_S
            and edge < TARGET_EDGE_RSS
            and loader < TARGET_LOADER_RSS
        ),
    }


def behind(api: int) -> bool:
    """Whether the loader is still taking in what a flood left: records waiting for their
    new tables, or a lag past a second."""
    try:
        m = scrape(f"http://{HOST}:{api}/metrics")
    except (OSError, ValueError, BenchError):
        return True
    return (
        m.get("tdedge_loader_new_tables_wait_seconds", 0.0) > 0
        or m.get("tdedge_loader_lag_seconds", 0.0) > 1.0
    )


def aftermath(t: Target, args: argparse.Namespace) -> tuple[list[float], float]:
    """The good client's latencies while the loader catches up with what the flood left
    (at most ``--catch-up`` seconds), and the seconds that took. The next shape then
    starts from a calm server, and a flood's after-effect is reported as its own, not
    as the next shape's."""
    began = time.monotonic()
    latencies: list[float] = []
    while behind(t.api) and time.monotonic() - began < args.catch_up:
        latencies += paced_client(t.main, t.write_key, args.rate, 1.0)
    return latencies, time.monotonic() - began


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="each phase (alone, flood)")
    p.add_argument("--rate", type=float, default=200.0, help="the good client's requests/s")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after each flood")
    p.add_argument(
        "--catch-up",
        type=float,
        default=180.0,
        help="longest wait, after each flood, for the loader to catch up [180]",
    )
    p.add_argument("--warmup", type=float, default=10.0, help="good traffic before the first shape")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"of {','.join(SHAPES)}")
    p.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    p.add_argument(
        "--serve-args",
        default="",
        help="more `tdedge serve` options, e.g. '--refusal-share 0' to compare",
    )
    return p.parse_args()


def main() -> int:
    args = parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - SHAPES.keys()
    if unknown:
        print(f"unknown shapes: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="tdedge-hostile-"))
    children = Children()
    server = Tdedge(
        children,
        tmp / "data",
        tmp,
        workers=1,
        loader=True,
        log_level="warning",
        extra=args.serve_args.split(),
        doors=("records", "api"),
    )
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        p = server.ports
        t = Target(server.port, p["records"], p["api"], server.write_key, server.master_key)
        create_database(server.data_dir, "bench_db")
        # Warm up: the server's first seconds (the loader's first commits, the lake's
        # set-up) stall requests by hundreds of ms; measured, they landed on whichever
        # shape ran first.
        log(f"warming up for {args.warmup} s")
        paced_client(t.main, t.write_key, args.rate, args.warmup)
        for name in shapes:
            log(f"shape {name}")
            rows.append(run_shape(name, server, t, args))
            log(json.dumps(rows[-1]))
    finally:
        children.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    header = (
        "| shape | p99 alone | p99 flood | ratio (≤ 3) | loader lag max (≤ 5 s) | "
        "new-table wait max | after: p99, caught up in | edge RSS | loader RSS | journal + | "
        "lake + | accepted | answers |"
    )
    print(header)
    print("|" + "---|" * 13)
    for r in rows:
        print(
            f"| {r['shape']} | {r['p99_alone_ms']} ms | {r['p99_flood_ms']} ms | {r['ratio']} | "
            f"{r['loader_lag_max_s']} s | {r['new_table_wait_max_s']} s | "
            f"{after_cell(r)} | {r['edge_rss_mib']} MiB | {r['loader_rss_mib']} MiB | "
            f"{r['journal_growth_mib']} MiB | {r['lake_growth_mib']} MiB | "
            f"{r['accepted_mib']} MiB | {r['answers']} |"
        )
    print(f"\n`bench/hostile {' '.join(sys.argv[1:])}` at {time.strftime('%Y-%m-%d %H:%M UTC')}")
    return 0


def after_cell(r: dict[str, Any]) -> str:
    if r["p99_after_ms"] is None:
        return "— (caught up)"
    return f"{r['p99_after_ms']} ms, {r['caught_up_s']} s"


if __name__ == "__main__":
    sys.exit(main())
