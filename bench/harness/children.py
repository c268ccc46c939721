"""The processes a bench starts: each in its own session (so its process group is the
whole tree it forks: granian's workers, the loader, the job runner), each stopped for
sure, the whole group, on exit, error or Ctrl-C; and what a process group uses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import log


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        """Its pid, which is also its process group's id."""
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        out = []
        for path in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Children:
    """Starts children in their own sessions and stops them (the whole group) for sure."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        logdir: Path,
        env: dict[str, str] | None = None,
    ) -> Child:
        """``argv`` with its output in ``logdir``/``name``.stdout and .stderr."""
        stdout = logdir / f"{name}.stdout"
        stderr = logdir / f"{name}.stderr"
        with stdout.open("ab") as out, stderr.open("ab") as err:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        child = Child(name, popen, stdout, stderr)
        self._children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 20.0) -> None:
        """SIGTERM to the group, SIGKILL if it is not gone in ``timeout`` s."""
        pgid = child.pid
        if group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child.popen.poll()
            if not group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            log(f"{child.name} did not stop in {timeout:.0f}s; killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=1)
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            try:
                self.stop(child, timeout=10.0)
            except Exception as e:  # keep cleaning up the others
                log(f"stopping {child.name}: {e}")


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind as KeyboardInterrupt, so the cleanup always runs
    (SIGINT too: a shell may start a background job with SIGINT ignored)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, _raise_on_signal) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------
# A process group from /proc: its members, their roles, CPU and memory.

# The argv word naming each of serve's child processes; everything else in the group (the
# supervisor, the HTTP workers) is the edge.
ROLES = ("loader", "jobs", "engine")


@dataclass
class Member:
    pid: int
    parent: int
    argv: list[str]
    cpu_s: float  # user + system so far

    @property
    def role(self) -> str:
        return next((r for r in ROLES if r in self.argv), "edge")


def members(pgid: int) -> Iterator[Member]:
    """The live processes of process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The fields after the command: state ppid pgrp … utime (11) stime (12).
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[2]) == pgid:
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            words = [a.decode(errors="replace") for a in argv]
            yield Member(int(entry.name), int(fields[1]), words, cpu)


def group_cpu_s(pgid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes of a process group, by
    role: "loader" (the loader and its refresher), "jobs", "engine" (the p13n engine
    process), "edge" (everything else: the supervisor and the HTTP workers)."""
    out = dict.fromkeys(("edge", *ROLES), 0.0)
    for m in members(pgid):
        out[m.role] += m.cpu_s
    return out


def thread_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the main thread of process ``pid`` (its event loop)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/task/{pid}/stat"))


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid``, all its threads (0 once it is gone)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def _stat_cpu_s(stat: Path) -> float:
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    """Resident set of ``pid`` in bytes (0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
