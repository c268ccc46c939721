"""An edge worker is told to stop once, however many signals ask it to.

granian's worker (2.8) turns each SIGINT and SIGTERM into a call of its stop signal's
``set``, which sends on a channel of one slot that its server reads once. A first
signal is read, a second fills the slot, and a third blocks in ``set`` for good, on the
worker's event loop and holding the GIL: a request still in flight is never answered,
and the worker never exits, so neither does ``serve``.

A stopping worker easily gets three: its own stop at the end of the drain, the
supervisor's stop of every worker, and one Ctrl-C (or one more ``kill``) from the
operator. So every worker's stop signal is wrapped before granian forks the workers:
the first signal sets it, and the rest change nothing, since the worker already
finishes what is in flight and exits.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

_ONCE = "_tdedge_once"


def once_per_worker() -> None:
    """Wrap granian's worker signal setup (in this process, so in the workers it forks)."""
    from granian import _signals

    granians: Callable[[asyncio.AbstractEventLoop], Any] = _signals.set_loop_signals
    if getattr(granians, _ONCE, False):
        return

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        stop = granians(loop)
        told = False

        def handler(signum: int, frame: FrameType | None) -> None:
            nonlocal told
            if not told:
                told = True
                stop.set()

        # The signals granian's own handler was given, which this one replaces.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, handler, signum, None)
        return stop

    setattr(set_loop_signals, _ONCE, True)
    _signals.set_loop_signals = set_loop_signals
