"""The heartbeat files of the background processes (the loader, the query job runner),
which the edge's /readyz reads.

Each is rewritten at least every second, atomically (write a temporary file, then
rename), so a reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import msgspec


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The loader's."""

    time: float  # unix seconds when it was written
    lag_records: int  # records in the journal not loaded yet
    lag_seconds: float  # age of the oldest of them
    pid: int
    failures: int = 0  # loader steps failed in a row (0 when healthy)


class JobsHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The query job runner's: it beats from its scheduling loop, not from the jobs'
    threads, so a long query does not silence it, and a hung loop does."""

    time: float  # unix seconds when it was written
    pid: int
    running: int  # jobs running now
    serving: bool = True  # False from its start until its sessions on the lake are open
    failed_starts: int = 0  # starts in a row before this one that never got to serve


Beat = TypeVar("Beat", bound=msgspec.Struct)


def write_heartbeat(path: Path, beat: msgspec.Struct) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(beat))
    os.replace(tmp, path)


def read_heartbeat(path: Path) -> Heartbeat | None:
    """The loader's last heartbeat, or None when there is none (or it cannot be read)."""
    return read_beat(path, Heartbeat)


def read_beat(path: Path, kind: type[Beat]) -> Beat | None:
    """The last heartbeat of this kind, or None when there is none (or it cannot be read)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (FileNotFoundError, msgspec.DecodeError):
        # Nothing has beaten yet, or the file is not tdedge's: not ready either way.
        return None


def starting_beat(path: Path, now: float) -> JobsHeartbeat:
    """The beat of a job runner process that is starting. It counts the starts before it
    that never got to serve: the supervisor restarts a runner that dies, and one that
    dies while starting, every time, beats as often as a healthy one."""
    last = read_beat(path, JobsHeartbeat)
    pid = os.getpid()
    if last is not None and last.pid == pid:  # this process has beaten already
        return msgspec.structs.replace(last, time=now)
    failed = 0 if last is None or last.serving else last.failed_starts + 1
    return JobsHeartbeat(time=now, pid=pid, running=0, serving=False, failed_starts=failed)


def jobs_problems(beat: JobsHeartbeat | None, now: float, timeout_s: float) -> list[str]:
    """What /readyz says about the job runner."""
    if beat is None:
        return ["job runner has not started"]
    if now - beat.time > timeout_s:
        return [f"job runner silent for {now - beat.time:.0f}s"]
    if not beat.serving and beat.failed_starts:
        times = "once" if beat.failed_starts == 1 else f"{beat.failed_starts} times in a row"
        return [f"job runner failed to start {times} (see the serve log); starting again"]
    return []
