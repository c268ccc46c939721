"""Body deadlines (edge/deadlines.py) with futures standing in for granian's body reads."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from granian.rsgi import ProtocolClosed  # type: ignore[attr-defined]

from tdedge.edge.deadlines import BodyDeadlines, TimedBody
from tdedge.edge.http import BodyTimeout, ClientGone


class Proto:
    """Hands out one future per read; the test resolves or fails them."""

    def __init__(self) -> None:
        self.pieces: list[asyncio.Future[bytes]] = []

    def _next(self) -> asyncio.Future[bytes]:
        self.pieces.append(asyncio.get_running_loop().create_future())
        return self.pieces[-1]

    def __call__(self) -> asyncio.Future[bytes]:
        return self._next()

    def __aiter__(self) -> Proto:
        return self

    def __anext__(self) -> asyncio.Future[bytes]:
        return self._next()

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        raise AssertionError("not answered here")


async def started(body: TimedBody, read: Any) -> asyncio.Task[bytes]:
    task: asyncio.Task[bytes] = asyncio.ensure_future(read)
    await asyncio.sleep(0)  # the read registers itself and waits
    return task


def test_a_whole_body_not_in_within_the_idle_deadline_is_408() -> None:
    async def run() -> None:
        deadlines = BodyDeadlines(idle_s=1.0, total_s=5.0)
        body = TimedBody(Proto(), deadlines)  # type: ignore[arg-type]
        task = await started(body, body())
        deadlines.sweep(time.monotonic() + 0.5)  # not yet
        await asyncio.sleep(0)
        assert not task.done()
        deadlines.sweep(time.monotonic() + 1.5)
        with pytest.raises(BodyTimeout, match="was not all in within 1 s") as e:
            await task
        assert e.value.status == 408 and e.value.code == "body_timeout"
        assert ("connection", "close") in e.value.headers
        assert not deadlines.waiting

    asyncio.run(run())


def test_a_streamed_body_is_timed_per_pause_and_in_all() -> None:
    async def run() -> None:
        deadlines = BodyDeadlines(idle_s=1.0, total_s=5.0)
        proto = Proto()
        body = TimedBody(proto, deadlines)  # type: ignore[arg-type]
        stream = body.__aiter__()
        first = await started(body, stream.__anext__())
        proto.pieces[-1].set_result(b"a")
        assert await first == b"a"
        # A piece just came: the pause starts again, the total does not.
        second = await started(body, stream.__anext__())
        deadlines.sweep(body.last + 0.9)
        await asyncio.sleep(0)
        assert not second.done()
        deadlines.sweep(body.started + 5.1)
        with pytest.raises(BodyTimeout, match="took longer than 5 s"):
            await second

    asyncio.run(run())


def test_a_piece_that_came_before_the_sweep_is_kept() -> None:
    async def run() -> None:
        deadlines = BodyDeadlines(idle_s=1.0, total_s=5.0)
        proto = Proto()
        body = TimedBody(proto, deadlines)  # type: ignore[arg-type]
        task = await started(body, body())
        proto.pieces[-1].set_result(b"{}")  # done, but its reader has not resumed yet
        deadlines.sweep(time.monotonic() + 10)
        assert await task == b"{}"

    asyncio.run(run())


def test_a_cancelled_request_is_not_a_timeout_and_a_closed_one_is_client_gone() -> None:
    async def run() -> None:
        deadlines = BodyDeadlines(idle_s=1.0, total_s=5.0)
        body = TimedBody(Proto(), deadlines)  # type: ignore[arg-type]
        task = await started(body, body())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proto2 = Proto()
        body = TimedBody(proto2, deadlines)  # type: ignore[arg-type]
        task = await started(body, body())
        proto2.pieces[-1].set_exception(ProtocolClosed("RSGI transport is closed"))
        with pytest.raises(ClientGone):
            await task
        assert not deadlines.waiting

    asyncio.run(run())
