#!/usr/bin/env python3
"""Postback benchmark: tdedge against nginx, loader throughput and freshness.

Run it as ``bench/postback [--duration 10] [--workers 1]`` (see bench/README.md).

Parts, in order (``--parts`` picks some):

- ``http``: wrk (-t2 -c64 --latency, keep-alive) POSTs the same small JSON body with the
  same Lua script first to nginx answering ``return 200 '{}'``, then to ``tdedge serve``
  (once per ``--workers`` value), then to nginx again. The ratio tdedge/nginx is the
  figure to read: both share the 2 cores with wrk, so absolute numbers move 20-40 %
  between runs. ``--rounds N`` alternates nginx and tdedge N times instead and reports
  the median of the paired ratios. The CPU that other processes used meanwhile is
  measured and printed: a busy machine makes every figure low.
  Before tdedge, the same wrk run goes to a bare granian RSGI app with the first
  ``--workers`` value (read the body, decode the JSON, answer ``{}``: no framework, no
  durability): the floor under any Python edge on granian, so "vs granian" shows what
  tdedge's own work costs (``--no-granian-ref`` skips it).
- ``drain``: right after each tdedge wrk run, the time until the loader has written
  every record the journal accepted (``tdedge_rows_written_total`` from /metrics, then
  confirmed with ``SELECT count(*)``).
- ``fresh``: on the idle server, records sent one at a time at ``--fresh-rate``/s, each
  with a unique id; one reader polls the table every ``--fresh-poll-ms`` and the first
  poll that sees an id gives its 200 → visible time.
- ``prefill``: a fresh data dir, ``--prefill`` records written straight into the journal
  with tdedge's own SQLiteJournal while the server is stopped, then ``serve`` starts and
  the time until the loader has loaded all of them is measured.

Targets are reported as PASS/MISS and never change the exit status: it is 0 unless the
bench itself failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"

# Re-execute under the repository's virtualenv: this script imports tdedge.
if Path(sys.prefix).resolve() != VENV.resolve() and (VENV / "bin" / "python").exists():
    os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any, Protocol  # noqa: E402

from harness import BenchError, log  # noqa: E402
from harness.children import Children, signals_raise  # noqa: E402
from harness.machine import OthersMeter, busy_cpu, fs_type, wait_quiet  # noqa: E402
from harness.ports import HOST, http_get  # noqa: E402
from harness.reference import bare_granian, check_tools, nginx  # noqa: E402
from harness.server import TDEDGE, Tdedge, check_tdedge, create_database  # noqa: E402
from harness.stats import alternate, median_ratio, percentile  # noqa: E402
from harness.wrk import WrkResult, median_result, run_wrk  # noqa: E402

DB = "bench_db"
TABLE = "bench_tbl"
FRESH_TABLE = "fresh_tbl"
PREFILL_TABLE = "prefill_tbl"
BODY = '{"param1":"value1","param2":1234}'
WRK_THREADS = 2
WRK_CONNECTIONS = 64

# Targets (reported, never asserted).
TARGET_RATIO = 0.35
TARGET_P99_MS = 15.0
TARGET_LOADER_ROWS_S = 300_000.0
TARGET_FRESH_P99_S = 2.0
# A drain smaller than this says the loader kept up; it is no throughput measurement.
DRAIN_MIN_BACKLOG = 50_000
QUIET = 0.15  # CPU share used by others under which the machine counts as quiet


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+dirty" if dirty else "")


def fmt_int(n: float | None) -> str:
    return "-" if n is None or math.isnan(n) else f"{n:,.0f}"


def fmt_f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


# ---------------------------------------------------------------------------------------
# The references' app and wrk's script.


# The reference a Python edge cannot beat: granian with a handler that does only what
# every postback needs (read the body, decode the JSON), without durability.
BARE_RSGI = """\
import msgspec

_decode = msgspec.json.decode
_headers = [("content-type", "application/json")]


class App:
    async def __rsgi__(self, scope, proto):
        body = await proto()
        ok = isinstance(_decode(body), dict)
        proto.response_bytes(200 if ok else 400, _headers, b"{}")


app = App()
"""


WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-TD-Write-Key"] = "{key}"
"""


def bootstrap(
    report: Report, children: Children, data_dir: Path, logdir: Path, log_level: str
) -> Tdedge:
    """First start on an empty data dir: read the keys, create the database, stop.

    A first start that dies after printing its keys is tried once more (and reported):
    the figures can still be measured, and the report says tdedge has a start-up bug.
    """
    server = Tdedge(children, data_dir, logdir, 1, loader=False, log_level=log_level)
    try:
        server.start()
    except BenchError as e:
        server.stop()
        if not server.write_key:
            raise
        first = str(e).strip().splitlines()
        report.errors.append(
            "first start of tdedge serve on an empty data dir died (started again): "
            + " | ".join(line.strip() for line in first if "Error" in line)[:300]
        )
        log(f"tdedge serve died on its first start; starting it again:\n{e}")
        server.start()
    server.stop()
    how = create_database(data_dir, DB)
    log(f"database {DB} created with {how}")
    return server


# ---------------------------------------------------------------------------------------
# Loader: drain after wrk, prefilled journal.


@dataclass
class Drain:
    what: str
    target_rows: int  # rows the loader had to write (the journal's accepted records)
    backlog_at_start: int  # rows not yet written when the clock started
    seconds: float | None  # start → every row written; None when not reached in time
    rows_per_s: float | None  # backlog_at_start / seconds
    steady_rows_per_s: float | None  # between the first and the last progress sample
    first_row_s: float | None  # start → first progress seen
    counted: int | None  # SELECT count(*) afterwards
    expected_count: int | None
    count_confirmed_s: float | None  # start → count(*) equals expected
    source: str  # how progress was read
    note: str = ""
    samples: list[tuple[float, int]] = field(default_factory=list)


def wait_rows(
    progress: Callable[[], int | None],
    target: int,
    timeout: float,
    stall: float,
    interval: float,
) -> tuple[list[tuple[float, int]], str]:
    """Sample ``progress`` until it reaches ``target``; returns samples (monotonic, rows)."""
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    last_change = start
    last = -1
    while True:
        now = time.monotonic()
        value = progress()
        if value is not None:
            samples.append((now, value))
            if value != last:
                last, last_change = value, now
            if value >= target:
                return samples, "reached"
        if now - start > timeout:
            return samples, f"timeout after {timeout:.0f}s"
        if now - last_change > stall:
            return samples, f"no progress for {stall:.0f}s"
        time.sleep(interval)


def _metric_rows(server: Tdedge) -> Callable[[], int | None]:
    def read() -> int | None:
        try:
            value = server.metrics().get("tdedge_rows_written_total")
        except (OSError, BenchError):
            return None
        return None if value is None else int(value)

    return read


def _count_rows(server: Tdedge, table: str, offset: int) -> Callable[[], int | None]:
    def read() -> int | None:
        n = server.count(f"{DB}.{table}")
        return None if n is None else n - offset

    return read


def measure_drain(
    server: Tdedge,
    what: str,
    table: str,
    target_rows: int,
    clock_start: float,
    rows_at_start: int,
    expected_count: int | None,
    timeout: float,
    stall: float,
) -> Drain:
    """From ``clock_start`` (when ``rows_at_start`` rows were written) until the loader has
    written ``target_rows`` rows (both counted since ``serve`` started).

    Progress comes from ``tdedge_rows_written_total`` (cheap, does not touch the lake, so
    the measurement does not slow the loader down). When that counter does not move, it
    falls back to polling ``SELECT count(*)`` once a second.
    """
    source = "metric tdedge_rows_written_total"
    samples, how = wait_rows(_metric_rows(server), target_rows, timeout, stall, 0.1)
    if how != "reached" and (not samples or samples[-1][1] == 0):
        source = "tdedge query count(*) (the metric did not move)"
        offset = (expected_count or target_rows) - target_rows
        left = max(stall, timeout - (time.monotonic() - clock_start))
        samples, how = wait_rows(_count_rows(server, table, offset), target_rows, left, stall, 1.0)
    samples.insert(0, (clock_start, rows_at_start))
    first = next((t for t, n in samples if n > rows_at_start), None)
    backlog = max(0, target_rows - rows_at_start)
    seconds = samples[-1][0] - clock_start if how == "reached" else None
    # The rate once the first commit after the clock's start is visible: leaves out
    # process start-up and the first batch's wait (max(1 batch, loader_batch_max_wait_s)).
    steady = None
    moving = [(t, n) for t, n in samples if n > rows_at_start]
    if len(moving) >= 2 and moving[-1][0] > moving[0][0]:
        steady = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0])
    # Confirm with the query the brief asks for (a second or two per call, bounded).
    counted, confirmed = None, None
    if expected_count is not None:
        deadline = time.monotonic() + min(60.0, timeout)
        while True:
            counted = server.count(f"{DB}.{table}")
            if counted is not None and counted >= expected_count:
                confirmed = time.monotonic() - clock_start
                break
            if time.monotonic() > deadline or how != "reached":
                break
            time.sleep(0.5)
    return Drain(
        what=what,
        target_rows=target_rows,
        backlog_at_start=backlog,
        seconds=seconds,
        rows_per_s=backlog / seconds if seconds else None,
        steady_rows_per_s=steady,
        first_row_s=first - clock_start if first is not None else None,
        counted=counted,
        expected_count=expected_count,
        count_confirmed_s=confirmed,
        source=source,
        note="" if how == "reached" else how,
        samples=[
            (round(t - clock_start, 3), n) for t, n in samples[:: max(1, len(samples) // 200)]
        ],
    )


def prefill_journal(data_dir: Path, n: int, key: str, table: str, group: int) -> float:
    """Append ``n`` envelopes with tdedge's own SQLiteJournal; returns the seconds taken.

    The server must be stopped: the journal claims a shard with an exclusive lock, like
    an edge worker does. The records are exactly what the edge would have journaled for
    ``BODY`` posted to /postback/v3/event/bench_db/<table> with ``key``, in group commits
    of ``group`` envelopes (``append_many`` with one request per commit): a busy edge
    worker behind 64 keep-alive connections groups at most 64.
    """
    import asyncio

    from tdedge.config import Settings
    from tdedge.control.keys import hash_key
    from tdedge.journal.envelope import Envelope
    from tdedge.journal.sqlite import SQLiteJournal

    settings = Settings(data_dir=str(data_dir), journal_max_backlog=max(10 * n, 1 << 40))
    record = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    key_hash = hash_key(key)
    in_flight = 32  # append_many calls queued at once, so the writer never waits

    async def fill() -> None:
        journal = SQLiteJournal(settings)
        try:
            written = 0
            while written < n:
                now_ms = time.time_ns() // 1_000_000
                env = Envelope(now_ms, "legacy", DB, table, key_hash, record)
                calls: list[asyncio.Task[None]] = []
                while len(calls) < in_flight and written < n:
                    k = min(group, n - written)
                    written += k
                    calls.append(asyncio.create_task(journal.append_many([env] * k)))
                    # The journal writes what one loop iteration appended as one row:
                    # yielding here makes each call its own row of exactly `group`.
                    await asyncio.sleep(0)
                await asyncio.gather(*calls)
        finally:
            journal.close()

    started = time.monotonic()
    asyncio.run(fill())
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------
# Freshness.


class IdReader(Protocol):
    name: str

    def ids(self) -> set[int]: ...

    def close(self) -> None: ...


class LakeIdReader:
    """One read-only lake connection (tdedge.lake.catalog.Lake), opened once."""

    def __init__(self, data_dir: Path, table: str) -> None:
        from tdedge.config import Settings
        from tdedge.lake.lake import Lake

        self._lake = Lake.open(Settings(data_dir=str(data_dir)), read_only=True)
        self._sql = f"SELECT id FROM {DB}.{table}"
        self.name = "tdedge.lake.lake.Lake (one read-only connection)"

    def ids(self) -> set[int]:
        try:
            result = self._lake.query(self._sql, None)
        except Exception:  # the table does not exist yet
            return set()
        return {int(r[0]) for r in result.rows if r[0] is not None}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._lake.close()


class CliIdReader:
    """``tdedge query`` per poll: slow (a process start each), used when Lake is missing."""

    def __init__(self, data_dir: Path, table: str) -> None:
        self._argv = [
            *TDEDGE,
            "query",
            "--data-dir",
            str(data_dir),
            "--format",
            "json",
            f"SELECT id FROM {DB}.{table}",
        ]
        self.name = "tdedge query subprocess per poll"

    def ids(self) -> set[int]:
        done = subprocess.run(self._argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            return set()
        return {int(r["id"]) for r in json.loads(done.stdout) if r.get("id") is not None}

    def close(self) -> None:
        pass


@dataclass
class Freshness:
    sent: int
    acked: int
    seen: int
    reader: str
    poll_interval_ms: float
    mean_poll_query_ms: float | None
    max_poll_query_ms: float | None
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    max_s: float | None
    first_s: float | None = None  # id 1: its table did not exist yet
    slowest_ids: list[int] = field(default_factory=list)
    note: str = ""


def wait_ready(server: Tdedge, timeout: float) -> str:
    """Wait for /readyz 200 (the loader beats and has no lag); returns a note if it never is."""
    deadline = time.monotonic() + timeout
    status, body = 0, b""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body = http_get(f"{server.url}/readyz", timeout=2)
            if status == 200:
                return ""
        time.sleep(0.2)
    return f"/readyz still {status} after {timeout:.0f}s ({body[:200].decode(errors='replace')})"


def measure_freshness(
    server: Tdedge, count: int, rate: float, poll_ms: float, timeout: float
) -> Freshness:
    # An idle server: the loader is up and has caught up (not still starting).
    not_ready = wait_ready(server, timeout)
    if not_ready:
        log(f"freshness: {not_ready}; measuring anyway")
    reader: IdReader
    try:
        reader = LakeIdReader(server.data_dir, FRESH_TABLE)
    except Exception as e:
        log(f"in-process lake reader unavailable ({type(e).__name__}: {e}); using tdedge query")
        reader = CliIdReader(server.data_dir, FRESH_TABLE)
    acked: dict[int, float] = {}
    failed: list[tuple[int, str]] = []
    stop = threading.Event()
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": server.write_key}
    path = f"/postback/v3/event/{DB}/{FRESH_TABLE}"

    def send() -> None:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
        start = time.monotonic()
        try:
            for i in range(1, count + 1):
                if stop.is_set():
                    return
                delay = start + (i - 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                body = json.dumps({"id": i, "param1": "value1", "param2": 1234}).encode()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException) as e:
                    failed.append((i, str(e)))
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
                    continue
                if resp.status == 200:
                    acked[i] = time.monotonic()
                else:
                    failed.append((i, f"HTTP {resp.status}"))
        finally:
            conn.close()

    sender = threading.Thread(target=send, name="fresh-sender", daemon=True)
    seen: dict[int, float] = {}
    query_ms: list[float] = []
    log(f"freshness: {count} records at {rate:g}/s, polling with {reader.name}")
    sender.start()
    deadline = time.monotonic() + count / rate + timeout
    try:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            ids = reader.ids()
            t1 = time.monotonic()
            query_ms.append((t1 - t0) * 1e3)
            # The snapshot is taken somewhere inside the query: its end is the one time
            # the rows were surely visible (an upper bound; never before their 200).
            for i in ids - seen.keys():
                seen[i] = t1
            if not sender.is_alive() and acked and acked.keys() <= seen.keys():
                break
            time.sleep(max(0.0, poll_ms / 1e3 - (time.monotonic() - t0)))
    finally:
        stop.set()
        sender.join(timeout=15)
        reader.close()
    by_id = {i: max(0.0, seen[i] - acked[i]) for i in acked if i in seen}
    latencies = list(by_id.values())
    note = f"{not_ready}. " if not_ready else ""
    if failed:
        note = f"{len(failed)} sends failed (first: {failed[0][1]}). "
    if len(latencies) < len(acked):
        note += f"{len(acked) - len(latencies)} acked ids never seen before the deadline."
    return Freshness(
        sent=count,
        acked=len(acked),
        seen=len(latencies),
        reader=reader.name,
        poll_interval_ms=poll_ms,
        mean_poll_query_ms=sum(query_ms) / len(query_ms) if query_ms else None,
        max_poll_query_ms=max(query_ms) if query_ms else None,
        p50_s=percentile(latencies, 50) if latencies else None,
        p90_s=percentile(latencies, 90) if latencies else None,
        p99_s=percentile(latencies, 99) if latencies else None,
        max_s=max(latencies) if latencies else None,
        first_s=by_id.get(1),
        slowest_ids=sorted(by_id, key=lambda i: -by_id[i])[:5],
        note=note.strip(),
    )


# ---------------------------------------------------------------------------------------
# The run.


@dataclass
class TdedgeRun:
    workers: int
    wrk: WrkResult
    ratio: float | None
    accepted: int | None  # records the journal took during wrk (metric delta)
    mean_group: float | None = None  # records per journal fsync during wrk
    mean_commit_ms: float | None = None  # time per journal group commit during wrk
    loaded_during: int | None = None  # rows the loader wrote while wrk ran
    max_lag_records: int | None = None  # tdedge_loader_lag_records, max sampled during wrk
    max_lag_s: float | None = None  # tdedge_loader_lag_seconds, max sampled during wrk
    drain: Drain | None = None
    # --rounds > 1: nginx and tdedge alternate; each round's pair and tdedge/nginx ratio.
    nginx_rounds: list[WrkResult] = field(default_factory=list)
    tdedge_rounds: list[WrkResult] = field(default_factory=list)
    round_ratios: list[float] = field(default_factory=list)


@dataclass
class Report:
    command: str
    started: str
    commit: str
    cores: int
    tmp_fs: str
    busy_before: float | None = None  # CPU used by other processes before the run (0..1)
    busy_after: float | None = None
    busy_during: float | None = None  # CPU used by other processes during the whole run
    nginx: WrkResult | None = None
    nginx_after: WrkResult | None = None  # the same nginx run again after tdedge's
    granian: WrkResult | None = None  # bare granian RSGI, no durability (the floor)
    tdedge: list[TdedgeRun] = field(default_factory=list)
    freshness: Freshness | None = None
    prefill: Drain | None = None
    prefill_write_s: float | None = None
    errors: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/postback",
        description="Postback benchmark: tdedge vs nginx (wrk), loader throughput, freshness.",
    )
    p.add_argument("--duration", type=int, default=10, help="wrk seconds per target [10]")
    p.add_argument(
        "--workers",
        default="1",
        help="tdedge serve --workers; a comma list (1,2) runs wrk once per value [1]",
    )
    p.add_argument(
        "--parts",
        default="http,drain,fresh,prefill",
        help="comma list of http, drain, fresh, prefill [all]",
    )
    p.add_argument("--nginx-workers", default="auto", help="nginx worker_processes [auto]")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate nginx and tdedge runs N times per --workers value and report the "
        "median ratio (robust on a busy machine) [1: nginx, tdedge, nginx again]",
    )
    p.add_argument(
        "--no-bracket",
        dest="bracket",
        action="store_false",
        help="run nginx only before tdedge, not again after it (the ratio then uses one run)",
    )
    p.add_argument(
        "--prefill", type=int, default=1_000_000, help="records for the prefill part [1000000]"
    )
    p.add_argument(
        "--prefill-group",
        type=int,
        default=64,
        help="envelopes per journal group commit in the prefill [64]",
    )
    p.add_argument("--fresh-count", type=int, default=200, help="freshness records [200]")
    p.add_argument("--fresh-rate", type=float, default=20.0, help="freshness records/s [20]")
    p.add_argument("--fresh-poll-ms", type=float, default=50.0, help="freshness poll [50]")
    p.add_argument(
        "--drain-timeout", type=float, default=300.0, help="max seconds per drain wait [300]"
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        help="give up a wait after this many seconds without progress [30]",
    )
    p.add_argument("--no-loader", action="store_true", help="serve --no-loader; HTTP part only")
    p.add_argument(
        "--no-granian-ref",
        dest="granian_ref",
        action="store_false",
        help="skip the bare granian RSGI reference run",
    )
    p.add_argument("--log-level", default="warning", help="tdedge serve --log-level [warning]")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other processes to use < 15%% CPU [0]",
    )
    p.add_argument("--tmp-dir", default=None, help="parent of the temp dirs [system default]")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write the results as JSON [bench/out/postback-<time>.json]",
    )
    args = p.parse_args(argv)
    try:
        args.worker_list = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        p.error("--workers takes integers, e.g. 1 or 1,2")
    if not args.worker_list or min(args.worker_list) < 1:
        p.error("--workers takes integers >= 1")
    args.part_set = {x.strip() for x in str(args.parts).split(",") if x.strip()}
    unknown = args.part_set - {"http", "drain", "fresh", "prefill"}
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.no_loader:
        args.part_set &= {"http"}
    if args.duration < 1 or args.rounds < 1:
        p.error("--duration and --rounds must be >= 1")
    if args.prefill_group < 1 or args.fresh_count < 1 or args.fresh_rate <= 0:
        p.error("--prefill-group and --fresh-count must be >= 1, --fresh-rate > 0")
    return args


class MetricsSampler:
    """Scrapes /metrics every ``interval`` seconds in a thread (the loader's lag over time)."""

    def __init__(self, server: Tdedge, interval: float = 0.5) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)

    def __enter__(self) -> MetricsSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError, BenchError):
                self.samples.append((time.monotonic(), self._server.metrics()))

    def max(self, name: str) -> float | None:
        values = [m[name] for _, m in self.samples if name in m]
        return max(values) if values else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def http_and_drain(
    args: argparse.Namespace,
    server: Tdedge,
    script: str,
    path: str,
    nginx: WrkResult | None,
    tmp: Path,
    expected_before: int,
    nginx_url: str | None = None,
) -> TdedgeRun:
    """wrk against ``server``, then (part ``drain``) the loader's catch-up.

    With ``nginx_url`` (``--rounds`` > 1) nginx and tdedge alternate ``args.rounds``
    times; the ratio is the median of each round's tdedge/nginx.
    """
    before = server.metrics()
    name = f"tdedge-w{server.workers}"
    pairs: list[list[WrkResult]] = []
    with MetricsSampler(server) as sampler:
        if nginx_url is None:
            result = run_wrk(name, f"{server.url}{path}", script, args.duration, tmp)
        else:
            reference = nginx_url
            pairs = alternate(
                args.rounds,
                lambda r: run_wrk(f"nginx-r{r + 1}", reference, script, args.duration, tmp),
                lambda r: run_wrk(
                    f"{name}-r{r + 1}", f"{server.url}{path}", script, args.duration, tmp
                ),
            )
            result = median_result(f"{name}/med{args.rounds}", [t for _, t in pairs])
        wrk_end = time.monotonic()
    at_end = server.metrics()
    time.sleep(0.5)  # requests still in flight when wrk stopped reach the journal
    after = server.metrics()
    appended = "tdedge_journal_appended_total"
    accepted = _delta(before, after, appended)
    run_ = TdedgeRun(
        server.workers,
        result,
        _ratio(result.rps, nginx.rps if nginx else None),
        accepted,
        mean_group=_ratio(
            _delta(before, at_end, appended),
            _delta(before, at_end, "tdedge_journal_commit_batch_size_count"),
        ),
        mean_commit_ms=_ratio(
            _delta_f(before, at_end, "tdedge_journal_commit_seconds_sum", 1e3),
            _delta(before, at_end, "tdedge_journal_commit_seconds_count"),
        ),
        loaded_during=_delta(before, at_end, "tdedge_rows_written_total"),
    )
    if pairs:
        run_.nginx_rounds = [n for n, _ in pairs]
        run_.tdedge_rounds = [t for _, t in pairs]
        run_.round_ratios = [t.rps / n.rps for n, t in pairs if n.rps > 0]
        run_.ratio = median_ratio((t.rps, n.rps) for n, t in pairs)
    lag = sampler.max("tdedge_loader_lag_records")
    run_.max_lag_records = None if lag is None else int(lag)
    run_.max_lag_s = sampler.max("tdedge_loader_lag_seconds")
    if "drain" in args.part_set and not args.no_loader:
        target = int(after.get(appended, 0.0))
        log(f"drain: waiting for the loader to write {target:,} rows")
        run_.drain = measure_drain(
            server,
            f"after wrk (workers={server.workers})",
            TABLE,
            target,
            wrk_end,
            int(at_end.get("tdedge_rows_written_total", 0.0)),
            None if accepted is None else expected_before + accepted,
            args.drain_timeout,
            args.stall_timeout,
        )
        log(f"  drain: {_drain_line(run_.drain)}")
    return run_


def run(args: argparse.Namespace, report: Report, children: Children, tmp: Path) -> None:
    parts: set[str] = args.part_set
    wrk_parts = parts & {"http", "drain", "fresh"}
    if wrk_parts:
        data_dir = tmp / "data"
        logdir = tmp / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        boot = bootstrap(report, children, data_dir, logdir, args.log_level)
        script = WRK_LUA.format(body=BODY, key=boot.write_key)
        path = f"/postback/v3/event/{DB}/{TABLE}"
        nginx_url: str | None = None
        with contextlib.ExitStack() as kept:
            if "http" in parts and args.rounds > 1:
                # Kept running (idle between its rounds) while tdedge's rounds alternate
                # with it.
                ref = kept.enter_context(nginx(children, tmp, args.nginx_workers))
                nginx_url = ref.url + path
            elif "http" in parts:
                with nginx(children, tmp, args.nginx_workers) as ref:
                    report.nginx = run_wrk("nginx", ref.url + path, script, args.duration, tmp)
            if "http" in parts and args.granian_ref:
                w = args.worker_list[0]
                with bare_granian(children, tmp, BARE_RSGI, w) as ref:
                    report.granian = run_wrk(
                        f"granian-w{w}", ref.url + path, script, args.duration, tmp
                    )
            tdedge_runs(args, report, children, boot, tmp, script, path, nginx_url)
        if nginx_url is not None:
            rounds = [n for r in report.tdedge for n in r.nginx_rounds]
            if rounds:
                report.nginx = median_result(f"nginx/med{len(rounds)}", rounds)
        elif "http" in parts and args.bracket:
            with nginx(children, tmp, args.nginx_workers) as ref:
                report.nginx_after = run_wrk(
                    "nginx-again", ref.url + path, script, args.duration, tmp
                )
            reference = nginx_reference(report)
            for r in report.tdedge:
                r.ratio = _ratio(r.wrk.rps, reference)
    if "prefill" in parts and args.prefill > 0:
        run_prefill(args, report, children, tmp)


def tdedge_runs(
    args: argparse.Namespace,
    report: Report,
    children: Children,
    boot: Tdedge,
    tmp: Path,
    script: str,
    path: str,
    nginx_url: str | None,
) -> None:
    """One server per ``--workers`` value on the data dir ``boot`` made: wrk and the
    drain, and (on the first) the freshness."""
    parts: set[str] = args.part_set
    data_dir, logdir = tmp / "data", tmp / "logs"
    expected_total = 0
    for index, workers in enumerate(args.worker_list):
        server = Tdedge(
            children,
            data_dir,
            logdir,
            workers,
            loader=not args.no_loader,
            log_level=args.log_level,
        )
        server.write_key, server.master_key = boot.write_key, boot.master_key
        server.start()
        try:
            if "http" in parts or "drain" in parts:
                run_ = http_and_drain(
                    args,
                    server,
                    script,
                    path,
                    report.nginx,
                    tmp,
                    expected_total,
                    nginx_url if "http" in parts else None,
                )
                report.tdedge.append(run_)
                expected_total += run_.accepted or 0
            if "fresh" in parts and index == 0:
                report.freshness = measure_freshness(
                    server,
                    args.fresh_count,
                    args.fresh_rate,
                    args.fresh_poll_ms,
                    timeout=max(30.0, args.stall_timeout),
                )
                log(f"  freshness: {_fresh_line(report.freshness)}")
        finally:
            server.stop()


def nginx_reference(report: Report) -> float | None:
    """nginx rps to compare with: the mean of the runs before and after tdedge's."""
    runs = [w.rps for w in (report.nginx, report.nginx_after) if w is not None]
    return sum(runs) / len(runs) if runs else None


def run_prefill(args: argparse.Namespace, report: Report, children: Children, tmp: Path) -> None:
    data_dir = tmp / "prefill-data"
    logdir = tmp / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    boot = bootstrap(report, children, data_dir, logdir, args.log_level)
    n = int(args.prefill)
    log(f"prefill: writing {n:,} envelopes into the journal with SQLiteJournal")
    report.prefill_write_s = prefill_journal(
        data_dir, n, boot.write_key, PREFILL_TABLE, args.prefill_group
    )
    log(
        f"  journal written in {report.prefill_write_s:.1f}s "
        f"({n / report.prefill_write_s:,.0f} records/s)"
    )
    server = Tdedge(
        children,
        data_dir,
        logdir,
        args.worker_list[0],
        loader=True,
        log_level=args.log_level,
        extra=["--journal-max-backlog", str(max(2_000_000, 2 * n))],
    )
    server.write_key, server.master_key = boot.write_key, boot.master_key
    server.start()
    try:
        report.prefill = measure_drain(
            server,
            f"prefilled journal, {n:,} records",
            PREFILL_TABLE,
            n,
            server.started_at,
            0,
            n,
            max(args.drain_timeout, n / 20_000),
            args.stall_timeout,
        )
        log(f"  prefill: {_drain_line(report.prefill)}")
    finally:
        server.stop()


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> int | None:
    if name not in after:
        return None
    return int(after[name] - before.get(name, 0.0))


def _delta_f(
    before: dict[str, float], after: dict[str, float], name: str, scale: float = 1.0
) -> float | None:
    if name not in after:
        return None
    return (after[name] - before.get(name, 0.0)) * scale


def _drain_line(d: Drain) -> str:
    if d.seconds is None:
        return (
            f"NOT DONE ({d.note}); rows written "
            f"{d.samples[-1][1] if d.samples else 0:,}/{d.target_rows:,}"
        )
    count = f"count(*) {fmt_int(d.counted)}/{fmt_int(d.expected_count)}"
    if d.backlog_at_start < DRAIN_MIN_BACKLOG:
        return (
            f"backlog {d.backlog_at_start:,} rows, written {d.seconds:.2f}s later (the loader "
            f"kept up: too small to measure a rate); {count}"
        )
    return (
        f"{d.backlog_at_start:,} rows in {d.seconds:.2f}s = {fmt_int(d.rows_per_s)} rows/s, "
        f"{fmt_int(d.steady_rows_per_s)} rows/s after the first commit; {count}"
    )


def _prefill_line(d: Drain) -> str:
    if d.seconds is None:
        return _drain_line(d)
    return (
        f"{d.target_rows:,} rows in {d.seconds:.2f}s from spawn = {fmt_int(d.rows_per_s)} rows/s;"
        f" first commit seen at {fmt_f(d.first_row_s)}s, then {fmt_int(d.steady_rows_per_s)}"
        " rows/s"
    )


def _fresh_line(f: Freshness) -> str:
    return (
        f"{f.seen}/{f.acked} seen; 200→visible p50 {fmt_f(f.p50_s)}s p99 {fmt_f(f.p99_s)}s "
        f"max {fmt_f(f.max_s)}s {f.note}"
    ).strip()


# ---------------------------------------------------------------------------------------
# Output.


def render(report: Report, args: argparse.Namespace) -> str:
    lines: list[str] = []
    lines.append("")
    lines.append(
        f"HTTP: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{args.duration}s --latency, POST "
        f"{len(BODY)} B JSON, keep-alive"
    )
    head = f"{'target':<14}{'rps':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    head += f"{'requests':>11}{'non-2xx':>9}{'sock err':>9}{'vs nginx':>10}"
    lines.append(head)
    lines.append("-" * len(head))
    rows: list[tuple[WrkResult, float | None]] = []
    if report.nginx:
        rows.append((report.nginx, None))
    if report.granian:
        rows.append((report.granian, _ratio(report.granian.rps, nginx_reference(report))))
    rows += [(r.wrk, r.ratio) for r in report.tdedge]
    if report.nginx_after:
        rows.append((report.nginx_after, None))
    for w, ratio in rows:
        lines.append(
            f"{w.target:<14}{w.rps:>10,.0f}{w.p50_ms:>9.2f}{w.p90_ms:>9.2f}{w.p99_ms:>9.2f}"
            f"{w.max_ms:>9.1f}{w.requests:>11,}{w.non2xx:>9,}{w.socket_errors:>9,}"
            f"{'' if ratio is None else f'{ratio:.1%}':>10}"
        )
    for r in report.tdedge:
        ratio_ok = None if r.ratio is None else r.ratio >= TARGET_RATIO
        lines.append(
            f"  workers={r.workers}: rps ≥ {TARGET_RATIO:.0%} of nginx: {verdict(ratio_ok)}"
            f"   p99 ≤ {TARGET_P99_MS:g} ms: {verdict(r.wrk.p99_ms <= TARGET_P99_MS)}"
            f"   journal accepted {fmt_int(r.accepted)} (wrk 2xx {r.wrk.ok_responses:,})"
        )
        lines.append(
            f"    journal {fmt_f(r.mean_group, 1)} records/fsync, {fmt_f(r.mean_commit_ms)} ms"
            f"/group commit; loader wrote {fmt_int(r.loaded_during)} rows during wrk, max lag "
            f"{fmt_int(r.max_lag_records)} records / {fmt_f(r.max_lag_s)} s"
        )
    if len(report.tdedge) > 1:
        best = max(report.tdedge, key=lambda r: r.wrk.rps)
        lines.append(f"  best: workers={best.workers} ({best.wrk.rps:,.0f} rps)")
    lines.extend(_granian_lines(report, "  "))
    for r in report.tdedge:
        if r.round_ratios:
            pairs = ", ".join(
                f"{t.rps:,.0f}/{n.rps:,.0f}={t.rps / n.rps:.1%}"
                for n, t in zip(r.nginx_rounds, r.tdedge_rounds, strict=True)
            )
            lines.append(f"  workers={r.workers} rounds (tdedge/nginx): {pairs}")
    if any(r.round_ratios for r in report.tdedge):
        lines.append("  vs nginx = median of each round's tdedge rps / nginx rps")
    elif report.tdedge and report.nginx:
        lines.append(
            f"  vs nginx = tdedge rps / {fmt_int(nginx_reference(report))} (mean of the nginx runs)"
        )
    lines.append(_busy_line(report))
    drains = [r.drain for r in report.tdedge if r.drain is not None]
    if drains or report.prefill:
        lines.append("")
        lines.append(f"Loader (target ≥ {TARGET_LOADER_ROWS_S:,.0f} rows/s)")
        for d in drains:
            lines.append(f"  drain {d.what}: {_drain_line(d)}")
            lines.append(
                f"    clock from wrk's end; backlog = rows not yet written then; source: {d.source}"
            )
            lines.append(f"    {verdict(_loader_ok(d))}")
        if report.prefill:
            d = report.prefill
            lines.append(f"  {d.what}: {_prefill_line(d)}")
            lines.append(
                f"    clock from `serve` spawn; count(*) = {fmt_int(d.counted)} confirmed at "
                f"{fmt_f(d.count_confirmed_s)}s; journal written in "
                f"{fmt_f(report.prefill_write_s, 1)}s beforehand; source: {d.source}"
            )
            lines.append(f"    {verdict(_loader_ok(d))} (on the rate after the first commit)")
    if report.freshness:
        f = report.freshness
        lines.append("")
        lines.append(f"Freshness (target p99 ≤ {TARGET_FRESH_P99_S:g} s): {_fresh_line(f)}")
        lines.append(
            f"  {f.sent} sent at {args.fresh_rate:g}/s, one at a time; poll every "
            f"{f.poll_interval_ms:g} ms with {f.reader} (query mean "
            f"{fmt_f(f.mean_poll_query_ms, 1)} ms, max {fmt_f(f.max_poll_query_ms, 0)} ms)"
        )
        lines.append(
            f"  id 1 (creates the table): {fmt_f(f.first_s)}s; slowest ids: "
            f"{', '.join(map(str, f.slowest_ids))}"
        )
        ok = None if f.p99_s is None or f.seen < f.acked else f.p99_s <= TARGET_FRESH_P99_S
        lines.append(f"  {verdict(ok)}")
    for e in report.errors:
        lines.append(f"ERROR: {e}")
    return "\n".join(lines)


def _granian_lines(report: Report, indent: str) -> list[str]:
    """tdedge against bare granian: what tdedge's own work (durability included) costs."""
    if report.granian is None or report.granian.rps <= 0:
        return []
    g = report.granian
    return [
        f"{indent}vs bare granian (same wrk, no durability): w={r.workers} "
        f"{r.wrk.rps / g.rps:.1%} of {g.rps:,.0f} rps"
        for r in report.tdedge
    ]


def _busy_line(report: Report) -> str:
    def pct(x: float | None) -> str:
        return "?" if x is None else f"{x:.0%}"

    warn = ""
    worst = max(report.busy_before or 0.0, report.busy_after or 0.0, report.busy_during or 0.0)
    if worst > QUIET:
        warn = "  ← the machine was busy: every figure here is low and noisy"
    return (
        f"  CPU used by other processes: {pct(report.busy_during)} during the run; "
        f"{pct(report.busy_before)} before, {pct(report.busy_after)} after{warn}"
    )


def _loader_ok(d: Drain) -> bool | None:
    """Judged on the rate after the first commit (start-up and first batch left out)."""
    if d.seconds is None:
        return False
    if d.backlog_at_start < DRAIN_MIN_BACKLOG:
        return None
    rate = d.steady_rows_per_s or d.rows_per_s
    return None if rate is None else rate >= TARGET_LOADER_ROWS_S


def summary_block(report: Report, args: argparse.Namespace) -> str:
    out = [
        "```",
        f"tdedge postback bench  {report.started}  commit {report.commit}  "
        f"{report.cores} cores  data on {report.tmp_fs}",
        f"$ {report.command}",
    ]
    out.append(_busy_line(report).strip())
    for n in (report.nginx, report.nginx_after):
        if n is None:
            continue
        out.append(
            f"{n.target + ' return 200':<17}{n.rps:>9,.0f} rps  p50 {n.p50_ms:.2f} ms  p99 "
            f"{n.p99_ms:.2f} ms"
        )
    for r in report.tdedge:
        w = r.wrk
        ratio = "-" if r.ratio is None else f"{r.ratio:.1%}"
        ratio_ok = None if r.ratio is None else r.ratio >= TARGET_RATIO
        how = f" (median of {len(r.round_ratios)} rounds)" if r.round_ratios else " mean"
        out.append(
            f"tdedge w={r.workers:<7} {w.rps:>9,.0f} rps  p50 {w.p50_ms:.2f} ms  p99 "
            f"{w.p99_ms:.2f} ms  = {ratio} of nginx{how} [{verdict(ratio_ok)} ≥35%] "
            f"[p99 {verdict(w.p99_ms <= TARGET_P99_MS)} ≤15ms]  non-2xx {w.non2xx} "
            f"sock-err {w.socket_errors}"
        )
        out.append(
            f"  w={r.workers}: {fmt_f(r.mean_group, 1)} records/fsync; loader during wrk "
            f"{fmt_int(r.loaded_during)} rows, max lag {fmt_int(r.max_lag_records)} records"
        )
    if report.granian:
        g = report.granian
        g_ratio = _ratio(g.rps, nginx_reference(report))
        out.append(
            f"{'bare granian w=' + g.target.removeprefix('granian-w'):<17}{g.rps:>9,.0f} rps  "
            f"p50 {g.p50_ms:.2f} ms  p99 {g.p99_ms:.2f} ms  = "
            f"{'-' if g_ratio is None else f'{g_ratio:.1%}'} of nginx (no durability)"
        )
    out.extend(_granian_lines(report, ""))
    if len(report.tdedge) > 1:
        best = max(report.tdedge, key=lambda r: r.wrk.rps)
        out.append(f"best workers value: {best.workers}")
    for r in report.tdedge:
        if r.drain:
            out.append(
                f"drain w={r.workers}: {_drain_line(r.drain)} [{verdict(_loader_ok(r.drain))}]"
            )
    if report.prefill:
        d = report.prefill
        out.append(f"prefill: {_prefill_line(d)} [{verdict(_loader_ok(d))} ≥300k rows/s]")
    if report.freshness:
        f = report.freshness
        ok = None if f.p99_s is None or f.seen < f.acked else f.p99_s <= TARGET_FRESH_P99_S
        out.append(
            f"freshness {f.sent}@{args.fresh_rate:g}/s: {_fresh_line(f)} "
            f"(poll {f.poll_interval_ms:g} ms) [{verdict(ok)} p99 ≤2s]"
        )
    out.extend(f"ERROR: {_one_line(e)}" for e in report.errors)
    out.append("```")
    return "\n".join(out)


def _one_line(text: str, limit: int = 300) -> str:
    """An error for the summary: its first line and the last line that names an error."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = next((line for line in reversed(lines) if "Error" in line), lines[-1])
    joined = lines[0] if last == lines[0] else f"{lines[0]} … {last}"
    return joined[:limit]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = Report(
        command=shlex.join(["bench/postback", *(sys.argv[1:] if argv is None else argv)]),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        commit=git_describe(),
        cores=os.cpu_count() or 0,
        tmp_fs="?",
    )
    try:
        check_tools("wrk", "nginx")
        check_tdedge()
    except BenchError as e:
        print(f"bench/postback: {e}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="tdedge-bench-", dir=args.tmp_dir))
    report.tmp_fs = f"{fs_type(tmp)} ({tmp.parent})"
    if fs_type(tmp) in {"tmpfs", "ramfs"}:
        log(f"warning: {tmp} is on {fs_type(tmp)}: fsync is free there, figures are optimistic")
    children = Children()
    status = 0
    meter: OthersMeter | None = None
    try:
        with signals_raise():
            report.busy_before = wait_quiet(args.wait_quiet, QUIET)
            meter = OthersMeter()
            run(args, report, children, tmp)
    except KeyboardInterrupt:
        report.errors.append("interrupted")
        status = 130
    except (BenchError, subprocess.SubprocessError, OSError) as e:
        report.errors.append(f"{type(e).__name__}: {e}")
        status = 1
    except Exception as e:  # a tdedge API the bench uses changed, say: keep what was measured
        traceback.print_exc()
        report.errors.append(f"{type(e).__name__}: {e} (traceback above)")
        status = 1
    finally:
        children.stop_all()
    if meter is not None:
        report.busy_during = meter.share()
        with contextlib.suppress(KeyboardInterrupt):
            report.busy_after = busy_cpu()
    print(render(report, args))
    print()
    print(summary_block(report, args))
    out = (
        Path(args.json)
        if args.json
        else REPO / "bench" / "out" / ("postback-" + time.strftime("%Y%m%d-%H%M%S") + ".json")
    )
    with contextlib.suppress(OSError):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(asdict(report)), indent=2) + "\n")
        print(f"\nresults: {out}")
    if args.keep:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
