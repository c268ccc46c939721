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
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import asdict  # noqa: E402
from typing import Any  # noqa: E402

from harness import BenchError, log  # noqa: E402
from harness.children import Children  # noqa: E402
from harness.ports import HOST  # noqa: E402
from harness.reference import NGINX_EMPTY_GIF, bare_granian, check_tools, nginx  # noqa: E402
from harness.server import Tdedge  # noqa: E402
from harness.wrk import run_wrk  # noqa: E402

RECORDS_HOST = "bench.records.in.localhost"
DATABASE = "test_db"  # created by serve on first start, owned by the write key's account
TARGET_PIXEL_RATIO = 0.45
TARGET_INGEST_EVENTS_S = 150_000.0
BATCH = 100


@contextlib.contextmanager
def tdedge(
    children: Children, tmp: Path, part: str, workers: int, loader: bool
) -> Iterator[Tdedge]:
    """``tdedge serve`` on a fresh data dir, once its start-up is over."""
    server = Tdedge(
        children,
        tmp / f"data-{part}-w{workers}",
        tmp,
        workers,
        loader=loader,
        extra=["--journal-max-backlog", "50000000"],
    )
    try:
        server.start()
        server.settle()
        yield server
    finally:
        server.stop()


BARE_APP = """\
from tdedge.edge.pixel import GIF, GIF_HEADERS


class App:
    async def __rsgi__(self, scope, proto):
        proto.response_bytes(200, GIF_HEADERS, GIF)


app = App()
"""


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
    try:
        check_tools("wrk", "nginx")
    except BenchError as e:
        log(str(e))
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="tdedge-bench-pixel-"))
    children = Children()
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
            with nginx(children, tmp, args.nginx_workers, NGINX_EMPTY_GIF) as ref:
                ng = run_wrk(
                    "nginx-empty_gif",
                    ref.url + pixel_path("k"),
                    pixel_script(),
                    args.duration,
                    tmp,
                    server_pgid=ref.pgid,
                )
            bare = None
            if args.bare:
                with bare_granian(children, tmp, BARE_APP, 1) as ref:
                    bare = run_wrk(
                        "bare-granian",
                        ref.url + pixel_path("k"),
                        pixel_script(),
                        args.duration,
                        tmp,
                        server_pgid=ref.pgid,
                    )
            with tdedge(children, tmp, "pixel", args.workers, args.loader) as srv:
                path = pixel_path(srv.write_key)
                check_pixel(srv.port, path)
                td = run_wrk(
                    "tdedge-pixel",
                    srv.url + path,
                    pixel_script(),
                    args.duration,
                    tmp,
                    server_pgid=srv.pgid,
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
            with tdedge(children, tmp, "ingest", args.workers, args.loader) as srv:
                check_ingest(srv.port, srv.write_key, body)
                run = run_wrk(
                    "tdedge-ingest",
                    f"{srv.url}/{DATABASE}/ingest_bench",
                    ingest_script(srv.write_key, body),
                    args.duration,
                    tmp,
                    conns=16,
                    server_pgid=srv.pgid,
                )
            ok = run.requests - run.non2xx
            report["ingest"] = {
                "wrk": asdict(run),
                "batch": BATCH,
                "body_bytes": len(body),
                "events_per_s": ok * BATCH / run.duration_s,
                "events_per_cpu_s": ok * BATCH / run.server_cpu_s if run.server_cpu_s else None,
                # The check request's 100 events are in there too.
                "journaled_events": None if args.loader else journal_count(srv.data_dir),
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
