"""Deadlines on reading request bodies: a client that sends slowly, or stops, gets a 408.

Every connection takes one of a worker's ``max_connections`` slots until it closes, and
granian bounds only the request head (``header_timeout_s``). Without a bound on the
body, a few thousand clients that send half a body and then wait hold every slot, and
the door stops answering anyone (a "slow body" attack needs no key). So a body must
keep arriving — no pause longer than ``body_idle_timeout_s`` — and be complete within
``body_timeout_s`` of the door starting to read it; otherwise the door answers 408
``body_timeout`` and the connection closes.

One sweep per worker checks every body being read, every ``SWEEP_S``, and cancels the
waits past their deadline: a timer per request (``asyncio.timeout``) cost about ten
times a dict entry, here as much as a fifth of a postback's own CPU. A deadline is
therefore enforced up to ``SWEEP_S`` late. The sweep cancels granian's future of the
awaited piece, not the request's task, so nothing but that one await is interrupted.

The granian transport's errors stop here as well: a body the client abandoned becomes
``ClientGone``, which the app logs in one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

# granian's public name for it, re-exported without __all__ (hence the ignore).
from granian.rsgi import ProtocolClosed  # type: ignore[attr-defined]

from tdedge.edge.http import BodyTimeout, ClientGone, Protocol_

SWEEP_S = 0.5


class BodyDeadlines:
    """The deadlines of every body one worker is reading, and the sweep that keeps them."""

    def __init__(self, idle_s: float, total_s: float) -> None:
        self.idle_s = idle_s
        self.total_s = total_s
        # The bodies waiting for a piece right now, with the future of that piece: a
        # body is here only for the length of one await, so a cancel lands on it alone.
        # TimedBody keeps it.
        self.waiting: dict[TimedBody, Any] = {}
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_later(SWEEP_S, self._sweep, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def watch(self, proto: Protocol_) -> TimedBody:
        """``proto`` as the doors get it: its body read under these deadlines."""
        return TimedBody(proto, self)

    def sweep(self, now: float) -> None:
        """Cancel the wait of every body that is past a deadline at ``now``."""
        for body, piece in list(self.waiting.items()):
            if now - body.started > self.total_s:
                why = f"took longer than {self.total_s:g} s"
            elif now - body.last > self.idle_s:
                why = (
                    f"was not all in within {self.idle_s:g} s"
                    if body.whole
                    else f"stopped arriving for {self.idle_s:g} s"
                )
            else:
                continue
            # False: the piece came meanwhile; the next sweep looks again.
            if piece.cancel():
                body.expired = why

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.waiting:
            self.sweep(time.monotonic())
        self._handle = loop.call_later(SWEEP_S, self._sweep, loop)


class TimedBody:
    """granian's RSGI protocol for one request, its body read under deadlines.

    The deadlines start with the first read, not with the request: a door may spend
    time on the head first (a key lookup in a thread), which is not the client's.
    """

    __slots__ = ("_deadlines", "_proto", "_stream", "expired", "last", "started", "whole")

    def __init__(self, proto: Protocol_, deadlines: BodyDeadlines) -> None:
        self._proto = proto
        self._deadlines = deadlines
        # The rest is set by the first read: most requests (the pixel's) read no body.
        self.started = 0.0  # when the first read began

    async def _wait(self, piece: Any, whole: bool) -> bytes:
        """Await ``piece`` (granian's future of some bytes) under the deadlines."""
        if not self.started:
            self.started = self.last = time.monotonic()
            self.whole = whole  # read in one call: no piece is seen before the end
            self.expired = ""  # why the sweep cancelled the read, once it has
        waiting = self._deadlines.waiting
        waiting[self] = piece
        try:
            data: bytes = await piece
        except asyncio.CancelledError:
            # Only the sweep cancels the piece itself; a cancelled request is another
            # matter and goes on up.
            if not self.expired:
                raise
            raise BodyTimeout(self.expired) from None
        except ProtocolClosed:
            raise ClientGone() from None
        finally:
            del waiting[self]
        if not whole:
            self.last = time.monotonic()
        return data

    def __call__(self) -> Coroutine[Any, Any, bytes]:
        """The whole body in one read: it must arrive within the idle deadline, as no
        piece of it can be seen arriving before the end."""
        return self._wait(self._proto(), True)

    def __aiter__(self) -> TimedBody:
        self._stream = self._proto.__aiter__()
        return self

    def __anext__(self) -> Coroutine[Any, Any, bytes]:
        # granian raises StopAsyncIteration from __anext__ itself, once the body is done.
        return self._wait(self._stream.__anext__(), False)

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._proto.response_bytes(status, headers, body)
