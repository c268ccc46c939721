"""What every process ``serve`` starts does the same way: stop on SIGTERM or SIGINT or
once the supervisor is gone, and hold its role's lock on the data dir.

Roles that must run once per data dir (the loader, the job runner, the p13n engine)
take ``run/<role>.lock``. A second one — ``tdedge loader`` started by hand while
``serve`` runs, say — says who holds the lock and waits visibly, and stops on a signal
like any other wait: it never hangs silently on a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
from pathlib import Path

from tdedge.config import Settings

log = logging.getLogger("tdedge.lifecycle")

# How often a waiting process tries the lock again, and how often it says so.
LOCK_RETRY_S = 0.2
LOCK_REPORT_S = 30.0


def parent_watch(parent_pid: int, stop: threading.Event) -> threading.Thread:
    """Set ``stop`` when the supervisor is gone (its pid is no longer our parent)."""

    def watch() -> None:
        while not stop.wait(0.5):
            if os.getppid() != parent_pid:
                log.warning("supervisor gone; stopping")
                stop.set()

    t = threading.Thread(target=watch, name="parent-watch", daemon=True)
    t.start()
    return t


def stop_event(parent_pid: int | None) -> threading.Event:
    """An event set by SIGTERM, SIGINT, or the supervisor's end (``parent_pid``)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if parent_pid is not None:
        parent_watch(parent_pid, stop)
    return stop


def exit_with_parent(parent_pid: int) -> None:
    """Interrupt this process (granian stops gracefully on SIGINT) once ``serve`` is gone."""
    stop = threading.Event()
    parent_watch(parent_pid, stop)

    def interrupt() -> None:
        stop.wait()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, name="exit-with-parent", daemon=True).start()


def lock_path(settings: Settings, role: str) -> Path:
    return settings.root / "run" / f"{role}.lock"


def role_lock(settings: Settings, role: str, stop: threading.Event) -> int | None:
    """Wait until this process is the only ``role`` of the data dir; the lock's fd, or
    None if ``stop`` was set first. The holder's pid is written in the lock file, so a
    process that waits can say whom it waits for."""
    path = lock_path(settings, role)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    reported = -LOCK_REPORT_S
    waited = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if waited - reported >= LOCK_REPORT_S:
                reported = waited
                log.warning(
                    f"another {role} runs on this data dir; waiting for it to stop",
                    extra={"holder_pid": _holder(fd), "lock": str(path)},
                )
            if stop.wait(LOCK_RETRY_S):
                os.close(fd)
                return None
            waited += LOCK_RETRY_S
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    return None
