"""Draining: how a node leaves a load balancer's pool without failing a client.

SIGTERM does not stop a node at once. The node first answers ``/readyz`` 503, so that
the balancer's health checks take it out of the pool; it keeps serving for
``drain_grace_s`` (what the balancer needs to notice: its check interval times its fall
count), and only then stops: granian stops accepting, finishes the requests in flight,
and the processes exit. SIGINT (Ctrl-C) still stops at once.

The deadline is one for the whole node, kept in ``run/draining`` of the data dir: the
first process told to stop writes it, every other reads it. So it holds whoever gets the
signal: ``serve`` alone (a container runtime signals its first process only), or every
process of the group at once (systemd, a Ctrl-C-like ``kill`` of the group); and a
process signalled only once ``serve``'s grace is over (its edge workers, its door
listeners) stops at once instead of draining again.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from tdedge.config import Settings


def path(settings: Settings) -> Path:
    return settings.root / "run" / "draining"


def deadline(settings: Settings) -> float | None:
    """When this node stops (Unix time), if it is draining; None if it is not."""
    with contextlib.suppress(OSError, ValueError):
        return float(path(settings).read_text())
    return None


def begin(settings: Settings) -> float:
    """Start draining the node, if it is not yet; the time it stops (Unix time)."""
    found = deadline(settings)
    if found is not None:
        return found
    at = time.time() + settings.drain_grace_s
    _write(settings, at)
    return at


def end(settings: Settings) -> None:
    """End the grace now (or skip it: SIGINT stops at once), so that the processes
    told to stop from now on stop at once instead of draining."""
    now = time.time()
    found = deadline(settings)
    if found is None or found > now:
        _write(settings, now)


def _write(settings: Settings, at: float) -> None:
    target = path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: a reader never sees half a number.
    partial = target.with_name(f".draining.{os.getpid()}")
    partial.write_text(repr(at))
    partial.replace(target)


def remaining(settings: Settings) -> float:
    """Seconds of the grace left (0 once it is over), starting the drain if need be."""
    return max(0.0, begin(settings) - time.time())


def clear(settings: Settings) -> None:
    """Forget a drain: at start (a node killed while draining left its file) and at exit."""
    path(settings).unlink(missing_ok=True)
