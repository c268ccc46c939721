"""wrk: one run against a URL with a Lua script, its figures, and several runs as one."""

from __future__ import annotations

import json
import math
import re
import resource
import shlex
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import BenchError, log
from harness.children import group_cpu_s

# Appended to every script: wrk's exact figures on one line (its text rounds them).
DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"status\\":%d,\\"connect\\":%d," ..
    "\\"read\\":%d,\\"write\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p75_us\\":%d," ..
    "\\"p90_us\\":%d,\\"p99_us\\":%d,\\"max_us\\":%d}\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    target: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non2xx: int
    socket_errors: int  # connect + read + write + timeout
    duration_s: float
    p75_ms: float = math.nan
    command: str = ""
    # CPU seconds wrk itself used: on shared cores it is part of the budget.
    wrk_cpu_s: float = math.nan
    # With the server's process group given (else NaN): the CPU seconds it used during
    # the run, and requests per such second. Unlike rps, this barely moves when other work
    # shares the cores.
    server_cpu_s: float = math.nan
    per_cpu_s: float = math.nan

    @property
    def ok_responses(self) -> int:
        return self.requests - self.non2xx


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(target: str, out: str) -> WrkResult:
    """Read wrk's text output; the ``DONE_LUA`` line, when present, gives exact figures."""

    def grab(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, out, re.MULTILINE)

    rps_m = grab(r"^Requests/sec:\s+([\d.]+)")
    total_m = grab(r"^\s*(\d+) requests in ([\d.]+\w+)")
    if rps_m is None or total_m is None:
        raise BenchError(f"could not parse wrk output:\n{out}")
    lat: dict[str, float] = {}
    for pct in ("50", "75", "90", "99"):
        m = grab(rf"^\s+{pct}(?:\.000)?%\s+(\S+)")
        lat[pct] = _to_ms(m.group(1)) if m else math.nan
    non2xx_m = grab(r"Non-2xx or 3xx responses:\s+(\d+)")
    sock_m = grab(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    max_m = grab(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)")
    result = WrkResult(
        target=target,
        rps=float(rps_m.group(1)),
        p50_ms=lat["50"],
        p75_ms=lat["75"],
        p90_ms=lat["90"],
        p99_ms=lat["99"],
        max_ms=_to_ms(max_m.group(1)) if max_m else math.nan,
        requests=int(total_m.group(1)),
        non2xx=int(non2xx_m.group(1)) if non2xx_m else 0,
        socket_errors=sum(int(g) for g in sock_m.groups()) if sock_m else 0,
        duration_s=_to_ms(total_m.group(2)) / 1e3,
    )
    exact = grab(r"^BENCH_JSON (\{.*\})$")
    if exact is not None:
        d = json.loads(exact.group(1))
        dur = d["duration_us"] / 1e6
        result.rps = d["requests"] / dur if dur > 0 else result.rps
        result.p50_ms = d["p50_us"] / 1e3
        result.p75_ms = d["p75_us"] / 1e3
        result.p90_ms = d["p90_us"] / 1e3
        result.p99_ms = d["p99_us"] / 1e3
        result.max_ms = d["max_us"] / 1e3
        result.requests = int(d["requests"])
        result.non2xx = int(d["status"])
        result.socket_errors = sum(int(d[k]) for k in ("connect", "read", "write", "timeout"))
        result.duration_s = dur
    return result


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    target: str,
    url: str,
    script: str,
    duration: int,
    tmp: Path,
    *,
    threads: int = 2,
    conns: int = 64,
    timeout: str | None = "10s",
    server_pgid: int | None = None,
) -> WrkResult:
    """wrk ``-t{threads} -c{conns} -d{duration}s --latency`` with the Lua ``script``
    against ``url``. ``timeout``: wrk's ``--timeout`` (None: wrk's own, 2 s); a request
    slower than that counts as a socket error. ``server_pgid``: the process group whose
    CPU time during the run is measured. The script and wrk's output are kept in
    ``tmp`` (``<target>.lua``, ``wrk-<target>.out``)."""
    path = tmp / f"{target}.lua"
    path.write_text(script + DONE_LUA)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency"]
    argv += [] if timeout is None else ["--timeout", timeout]
    argv += ["-s", str(path), url]
    log(f"wrk → {target}: {shlex.join(argv)}")
    cpu_before = None if server_pgid is None else sum(group_cpu_s(server_pgid).values())
    wrk_before = _children_cpu_s()
    # wrk runs in the foreground with a hard time bound; Ctrl-C reaches it through the
    # terminal's process group, and the timeout kills it otherwise.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    wrk_cpu = _children_cpu_s() - wrk_before
    server_cpu = None
    if server_pgid is not None and cpu_before is not None:
        server_cpu = sum(group_cpu_s(server_pgid).values()) - cpu_before
    (tmp / f"wrk-{target}.out").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = parse_wrk(target, done.stdout)
    result.command = shlex.join([*argv[:-3], "-s", "<script>", url])
    result.wrk_cpu_s = wrk_cpu
    cpu_note = ""
    if server_cpu is not None:
        result.server_cpu_s = server_cpu
        result.per_cpu_s = result.requests / server_cpu if server_cpu > 0 else math.nan
        cpu_note = f"; server CPU {server_cpu:.2f} s = {result.per_cpu_s:,.0f} req/CPU-s"
    log(
        f"  {target}: {result.rps:,.0f} rps, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, non-2xx {result.non2xx}, socket errors "
        f"{result.socket_errors}{cpu_note}"
    )
    return result


def median_result(target: str, results: Sequence[WrkResult]) -> WrkResult:
    """Several runs of one target as one: medians of rps and latencies, sums of counts."""
    med = statistics.median
    return WrkResult(
        target=target,
        rps=med(r.rps for r in results),
        p50_ms=med(r.p50_ms for r in results),
        p75_ms=med(r.p75_ms for r in results),
        p90_ms=med(r.p90_ms for r in results),
        p99_ms=med(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        requests=sum(r.requests for r in results),
        non2xx=sum(r.non2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        duration_s=sum(r.duration_s for r in results),
        wrk_cpu_s=sum(r.wrk_cpu_s for r in results),
    )
