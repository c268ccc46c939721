#!/usr/bin/env python3
"""Pixel and Data Ingestion API benchmarks. See bench/README.md.

``pixel``: wrk (-t2 -c64, keep-alive) GETs the same pixel URL first from nginx's
``empty_gif`` (the ceiling on this machine), then from ``tdedge serve`` on its legacy
door; every tdedge answer waited for its record's fsync. The ratio of the two rps in the
same run is the figure (target ≥ 45 %).

``ingest``: wrk POSTs ``{"events":[…100 events…]}`` (application/vnd.treasuredata.v1+json,
TD1 auth) to the records door; events/s = 2xx answers * 100 / seconds, each 200 meaning
all 100 events are fsynced in the journal (target ≥ 150,000 events/s).

Every process it starts runs in its own process group and is stopped on exit. Targets are
reported as PASS/MISS, never asserted. Load runs are bounded by ``--duration`` (≤ 10 s).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
if Path(sys.prefix).resolve() != VENV.resolve() and (VENV / "bin" / "python").exists():
    os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

HOST = "127.0.0.1"
RECORDS_HOST = "bench.records.in.localhost"
DATABASE = "test_db"  # created by serve on first start, owned by the write key's account
TARGET_PIXEL_RATIO = 0.45
TARGET_INGEST_EVENTS_S = 150_000.0
BATCH = 100

NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{ empty_gif; add_header Cache-Control no-store; }}
    }}
}}
"""

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"non2xx\\":%d,\\"socket_errors\\":%d," ..
    "\\"p50_us\\":%d,\\"p99_us\\":%d}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


@dataclass
class Wrk:
    target: str
    rps: float
    requests: int
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    duration_s: float
    # CPU seconds the server's process group used during the run, and requests per CPU
    # second: unlike rps, this barely moves when other work shares the cores.
    server_cpu_s: float
    per_cpu_s: float


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Children:
    """Processes started by the bench, each in its own group, all stopped on exit."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = (self._logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # The group's other members (granian workers, the loader) go with it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited ({proc.returncode})")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.1)
    raise BenchError(f"{what} did not answer at {url}")


def run_wrk(
    target: str,
    url: str,
    script: str,
    duration: int,
    threads: int,
    conns: int,
    tmp: Path,
    pgid: int,
) -> Wrk:
    path = tmp / f"{target}.lua"
    path.write_text(script + WRK_DONE)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(path),
        url,
    ]
    log(f"wrk → {target}: {' '.join(argv)}")
    cpu_before = group_cpu_seconds(pgid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    cpu = group_cpu_seconds(pgid) - cpu_before
    (tmp / f"wrk-{target}.out").write_text(done.stdout + done.stderr)
    m = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or m is None:
        raise BenchError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    d = json.loads(m.group(1))
    seconds = d["duration_us"] / 1e6
    result = Wrk(
        target=target,
        rps=d["requests"] / seconds,
        requests=d["requests"],
        non2xx=d["non2xx"],
        socket_errors=d["socket_errors"],
        p50_ms=d["p50_us"] / 1e3,
        p99_ms=d["p99_us"] / 1e3,
        duration_s=seconds,
        server_cpu_s=cpu,
        per_cpu_s=d["requests"] / cpu if cpu > 0 else float("nan"),
    )
    log(
        f"  {target}: {result.rps:,.0f} rps, p50 {result.p50_ms:.2f} ms, p99 "
        f"{result.p99_ms:.2f} ms, non-2xx {result.non2xx}, socket errors "
        f"{result.socket_errors}; server CPU {cpu:.2f} s = {result.per_cpu_s:,.0f} req/CPU-s"
    )
    return result


@contextlib.contextmanager
def nginx(children: Children, tmp: Path, workers: str) -> Iterator[tuple[int, int]]:
    ndir = tmp / "nginx"
    ndir.mkdir()
    port = free_port()
    conf = ndir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, dir=ndir, host=HOST, port=port))
    proc = children.start(
        "nginx", [shutil.which("nginx") or "nginx", "-p", str(ndir), "-c", str(conf)]
    )
    try:
        wait_http(f"http://{HOST}:{port}/", proc, "nginx")
        yield port, proc.pid
    finally:
        children.stop(proc)


@dataclass
class Tdedge:
    port: int
    write_key: str
    data: Path
    pgid: int


@contextlib.contextmanager
def tdedge(children: Children, tmp: Path, workers: int, loader: bool) -> Iterator[Tdedge]:
    port = free_port()
    data = tmp / f"data-w{workers}-{port}"
    argv = [
        str(VENV / "bin" / "tdedge"),
        "serve",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--journal-max-backlog",
        "50000000",
        "--log-level",
        "warning",
    ]
    if not loader:
        argv.append("--no-loader")
    proc = children.start(f"tdedge-{port}", argv)
    try:
        wait_http(f"http://{HOST}:{port}/healthz", proc, "tdedge")
        settle(proc.pid)
        text = (tmp / f"tdedge-{port}.log").read_text()
        m = re.search(r"write key:\s+(\S+)", text)
        if m is None:
            raise BenchError(f"no write key in serve output:\n{text}")
        yield Tdedge(port, m.group(1), data, proc.pid)
    finally:
        children.stop(proc)


BARE_APP = """\
from tdedge.edge.pixel import GIF, GIF_HEADERS


class App:
    async def __rsgi__(self, scope, proto):
        proto.response_bytes(200, GIF_HEADERS, GIF)


app = App()
"""


@contextlib.contextmanager
def bare_granian(children: Children, tmp: Path) -> Iterator[tuple[int, int]]:
    """granian answering the GIF with no logic and no journal: Python's ceiling here."""
    (tmp / "bare_pixel.py").write_text(BARE_APP)
    port = free_port()
    argv = [
        str(VENV / "bin" / "granian"),
        "--interface",
        "rsgi",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--host",
        HOST,
        "--port",
        str(port),
        "--working-dir",
        str(tmp),
        "--log-level",
        "warning",
        "bare_pixel:app",
    ]
    proc = children.start("bare-granian", argv)
    try:
        wait_http(f"http://{HOST}:{port}/", proc, "bare granian")
        yield port, proc.pid
    finally:
        children.stop(proc)


def settle(pgid: int, timeout: float = 30.0) -> None:
    """Wait until the server's processes stop starting up (the loader, the job runner and
    the workers import a lot), so their start-up CPU is not billed to the load run."""
    deadline = time.monotonic() + timeout
    last = group_cpu_seconds(pgid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = group_cpu_seconds(pgid)
        if now - last < 0.05:  # under 10 % of a core
            return
        last = now
    log("server still busy after start-up; measuring anyway")


def pixel_path(key: str) -> str:
    query = urllib.parse.urlencode(
        {
            "td_format": "pixel",
            "td_write_key": key,
            "campaign": "spring_sale",
            "utm_source": "newsletter",
            "user": "u12345",
            "td_ip": "td_ip",
            "td_ua": "td_ua",
        }
    )
    return f"/postback/v3/event/{DATABASE}/pixel_bench?{query}"


def pixel_script() -> str:
    return 'wrk.headers["User-Agent"] = "Mozilla/5.0 (bench) Chrome/156"\n'


def ingest_body() -> bytes:
    """100 events shaped like td-js-sdk's (about 330 bytes each)."""
    events = [
        {
            "td_version": "4.4.3",
            "td_client_id": f"4f1c2b3a-0000-4000-8000-{i:012d}",
            "td_charset": "utf-8",
            "td_language": "en-us",
            "td_screen": "1920x1080",
            "td_viewport": "1280x720",
            "td_title": "Spring sale",
            "td_url": "https://shop.example.com/sale?item=42",
            "td_path": "/sale",
            "td_host": "shop.example.com",
            "action": "view",
            "item": i,
            "price": 19.99,
        }
        for i in range(BATCH)
    ]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def ingest_script(key: str, body: bytes) -> str:
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/vnd.treasuredata.v1+json"\n'
        f'wrk.headers["Authorization"] = "TD1 {key}"\n'
        f'wrk.headers["Host"] = "{RECORDS_HOST}"\n'
    )


def check_pixel(port: int, path: str) -> None:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as r:
        body = r.read()
        if r.status != 200 or r.headers["content-type"] != "image/gif" or len(body) != 43:
            raise BenchError(f"pixel answered {r.status} {r.headers} {body!r}")


def check_ingest(port: int, key: str, body: bytes) -> None:
    req = urllib.request.Request(
        f"http://{HOST}:{port}/{DATABASE}/ingest_bench",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/vnd.treasuredata.v1+json",
            "Authorization": f"TD1 {key}",
            "Host": RECORDS_HOST,
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        receipts = json.loads(r.read())["receipts"]
    if len(receipts) != BATCH or not all(x["success"] is True for x in receipts):
        raise BenchError(f"ingest receipts are not all successes: {receipts[:3]}")


def journal_count(data: Path) -> int:
    """Records in the journal (without a loader nothing was released)."""
    import sqlite3

    total = 0
    for shard in (data / "journal").glob("shard-*.sqlite"):
        conn = sqlite3.connect(shard)
        try:
            total += int(conn.execute("SELECT coalesce(sum(n), 0) FROM journal").fetchone()[0])
        finally:
            conn.close()
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default="pixel,ingest", help="pixel, ingest or both [pixel,ingest]")
    p.add_argument(
        "--duration",
        type=int,
        default=10,
        choices=range(1, 11),
        metavar="1-10",
        help="seconds per wrk run [10]",
    )
    p.add_argument("--workers", type=int, default=1, help="tdedge edge workers [1]")
    p.add_argument("--nginx-workers", default="auto", help="nginx worker_processes [auto]")
    p.add_argument(
        "--loader",
        action="store_true",
        help="run the loader beside the edge (default: --no-loader, the edge alone)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument(
        "--bare",
        action="store_true",
        help="also measure a bare granian app answering the GIF (no logic, no journal)",
    )
    args = p.parse_args()
    parts = {x.strip() for x in args.parts.split(",")}
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            log(f"{tool} not found: apt-get install -y wrk nginx-light")
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="tdedge-bench-pixel-"))
    children = Children(tmp)
    report: dict[str, Any] = {
        "command": "bench/pixel_ingest.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "workers": args.workers,
        "loader": args.loader,
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        if "pixel" in parts:
            with nginx(children, tmp, args.nginx_workers) as (nport, npg):
                ng = run_wrk(
                    "nginx-empty_gif",
                    f"http://{HOST}:{nport}{pixel_path('k')}",
                    pixel_script(),
                    args.duration,
                    2,
                    64,
                    tmp,
                    npg,
                )
            bare = None
            if args.bare:
                with bare_granian(children, tmp) as (bport, bpg):
                    bare = run_wrk(
                        "bare-granian",
                        f"http://{HOST}:{bport}{pixel_path('k')}",
                        pixel_script(),
                        args.duration,
                        2,
                        64,
                        tmp,
                        bpg,
                    )
            with tdedge(children, tmp, args.workers, args.loader) as srv:
                path = pixel_path(srv.write_key)
                check_pixel(srv.port, path)
                td = run_wrk(
                    "tdedge-pixel",
                    f"http://{HOST}:{srv.port}{path}",
                    pixel_script(),
                    args.duration,
                    2,
                    64,
                    tmp,
                    srv.pgid,
                )
            report["pixel"] = {
                "nginx": asdict(ng),
                "bare_granian": asdict(bare) if bare else None,
                "tdedge": asdict(td),
                "ratio": td.rps / ng.rps,
                "cpu_ratio": td.per_cpu_s / ng.per_cpu_s,
            }
        if "ingest" in parts:
            body = ingest_body()
            with tdedge(children, tmp, args.workers, args.loader) as srv:
                check_ingest(srv.port, srv.write_key, body)
                run = run_wrk(
                    "tdedge-ingest",
                    f"http://{HOST}:{srv.port}/{DATABASE}/ingest_bench",
                    ingest_script(srv.write_key, body),
                    args.duration,
                    2,
                    16,
                    tmp,
                    srv.pgid,
                )
            ok = run.requests - run.non2xx
            report["ingest"] = {
                "wrk": asdict(run),
                "batch": BATCH,
                "body_bytes": len(body),
                "events_per_s": ok * BATCH / run.duration_s,
                "events_per_cpu_s": ok * BATCH / run.server_cpu_s if run.server_cpu_s else None,
                # The check request's 100 events are in there too.
                "journaled_events": None if args.loader else journal_count(srv.data),
            }
    except BenchError as e:
        log(f"bench failed: {e}")
        return 1
    finally:
        children.stop_all()
        report["loadavg_after"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    out = REPO / "bench" / "out" / f"pixel-ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    summary(report, out)
    return 0


def summary(report: dict[str, Any], out: Path) -> None:
    lines = [
        f"# {report['command']}  ({report['started']}, {report['cores']} cores, "
        f"workers {report['workers']}, loader {'on' if report['loader'] else 'off'}, "
        f"load before {report['loadavg_before'][0]:.1f})"
    ]
    if "pixel" in report:
        px = report["pixel"]
        verdict = "PASS" if px["ratio"] >= TARGET_PIXEL_RATIO else "MISS"
        lines.append(
            f"pixel: nginx empty_gif {px['nginx']['rps']:,.0f} rps, "
            f"tdedge {px['tdedge']['rps']:,.0f} rps "
            f"(p99 {px['tdedge']['p99_ms']:.1f} ms, non-2xx {px['tdedge']['non2xx']}) = "
            f"{px['ratio']:.0%} of nginx [{verdict} ≥ {TARGET_PIXEL_RATIO:.0%}]"
        )
        lines.append(
            f"pixel per server CPU-second: nginx {px['nginx']['per_cpu_s']:,.0f}, "
            f"tdedge {px['tdedge']['per_cpu_s']:,.0f} = {px['cpu_ratio']:.0%} of nginx"
        )
        if px["bare_granian"]:
            bare = px["bare_granian"]["rps"]
            lines.append(
                f"pixel: bare granian (GIF, no logic, no journal) {bare:,.0f} rps = "
                f"{bare / px['nginx']['rps']:.0%} of nginx; "
                f"tdedge = {px['tdedge']['rps'] / bare:.0%} of bare granian"
            )
    if "ingest" in report:
        ing = report["ingest"]
        verdict = "PASS" if ing["events_per_s"] >= TARGET_INGEST_EVENTS_S else "MISS"
        lines.append(
            f"ingest: {ing['events_per_s']:,.0f} events/s durable "
            f"({ing['wrk']['rps']:,.0f} req/s of {ing['batch']} events, "
            f"{ing['body_bytes']:,} B; p99 {ing['wrk']['p99_ms']:.1f} ms, "
            f"non-2xx {ing['wrk']['non2xx']}) [{verdict} ≥ {TARGET_INGEST_EVENTS_S:,.0f}]"
        )
        if ing["events_per_cpu_s"]:
            lines.append(
                f"ingest per server CPU-second: {ing['events_per_cpu_s']:,.0f} events "
                f"({ing['wrk']['server_cpu_s']:.1f} CPU-s in {ing['wrk']['duration_s']:.1f} s)"
            )
        if ing["journaled_events"] is not None:
            lines.append(f"ingest: {ing['journaled_events']:,} events in the journal afterwards")
    lines.append(f"report: {out.relative_to(REPO)}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
