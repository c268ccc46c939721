"""The machine the bench shares: how busy its cores are (other work makes every figure
low and noisy), waiting for them to be quiet, and the file system under the data."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from harness import log


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cpu(seconds: float = 2.0) -> float | None:
    """Share of the machine's CPU time used over ``seconds`` (0..1), by anything."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def wait_quiet(limit_s: float, below: float) -> float | None:
    """Wait up to ``limit_s`` for the machine to be under ``below`` busy; returns the
    last busy share."""
    deadline = time.monotonic() + limit_s
    busy = busy_cpu()
    while busy is not None and busy > below and time.monotonic() < deadline:
        log(f"machine busy ({busy:.0%} CPU used by other processes); waiting (--wait-quiet)")
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
        busy = busy_cpu()
    return busy


class OthersMeter:
    """CPU used by processes other than this bench and its children, over a stretch.

    Machine-wide user+nice+system time from /proc/stat, minus this process's own and its
    reaped children's (every server, loader and wrk it started, once stopped), divided by
    the stretch's wall time times the cores. Interrupt time is left out on both sides.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        busy = sum(int(v) for v in fields[:3]) / tick
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, own

    def share(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        others = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return max(0.0, others / ((end[0] - self._start[0]) * (os.cpu_count() or 1)))


def fs_type(path: Path) -> str:
    """The file-system type holding ``path`` (from /proc/mounts; "?" when unknown)."""
    best, kind = "", "?"
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind
