"""An edge worker's side of the engine process (``realtime/host.py``).

``decide`` queues the request's ask; once per event-loop iteration everything queued
goes out in one frame, and the answers come back in frames of their own. One
connection per worker, opened on the first p13n request and again after it is lost.

Failures answer as the profile store being down (500, 1002), never hang: asks in
flight when the connection drops fail at once, an ask unanswered for the store's
timeout plus ``MARGIN_S`` fails then (the engine answers 1002 itself when it waited
for the store that long), and while the engine cannot be reached — restarting, or
not started yet — requests wait for it up to the timeout, then fail fast for
``DOWN_FOR_S`` so a queue of them does not each wait again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from tdedge.realtime import errors
from tdedge.realtime.engine import Request
from tdedge.realtime.errors import ProfileStoreDown, StoreUnavailable
from tdedge.realtime.wire import OK, Answer, Ask, FramedProtocol, connect_unix, decode_answers

log = logging.getLogger("tdedge.p13n")

MARGIN_S = 2.0
DOWN_FOR_S = 0.5
_CONNECT_POLL_S = 0.05
_STORE_ERRORS: dict[int, type[StoreUnavailable]] = {
    e.code: e
    for e in (
        errors.JournalDown,
        errors.ProfileStoreDown,
        errors.BatchStoreDown,
        errors.ConfigStoreDown,
        errors.KeyStoreDown,
    )
}


class EngineClient:
    def __init__(self, path: Path, timeout_s: float = 2.0) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()
        self._down_until = float("-inf")
        self._down = ""  # why the engine could not be reached, last time
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._out: list[Ask] = []
        self._next_id = 0

    def set_timeout(self, timeout_s: float) -> None:
        """The store's timeout (``limits.store_timeout_ms``), which the engine also uses."""
        self._timeout_s = timeout_s

    async def decide(self, request: Request, body: bytes, generation: int) -> bytes:
        """The answer body; StoreUnavailable or Refused when there is none."""
        if self._protocol is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        ask_id = self._next_id
        self._next_id += 1
        self._waiting[ask_id] = fut
        if not self._out:
            loop.call_soon(self._send, loop)
        service = request.service.name
        self._out.append(
            Ask(ask_id, generation, service, request.table, body, request.keys, request.public)
        )
        return await fut

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        asks, self._out = self._out, []
        protocol = self._protocol
        if protocol is None:  # lost since these were queued
            self._fail([a.id for a in asks], ProfileStoreDown("the p13n engine connection closed"))
            return
        protocol.send(asks)
        loop.call_later(self._timeout_s + MARGIN_S, self._expire, [a.id for a in asks])

    def _expire(self, ask_ids: list[int]) -> None:
        waiting = self._waiting
        late = [i for i in ask_ids if i in waiting]
        if late:
            log.error("p13n engine did not answer in time", extra={"asks": len(late)})
            timeout = self._timeout_s + MARGIN_S
            self._fail(late, ProfileStoreDown(f"the p13n engine did not answer in {timeout:g}s"))

    def _fail(self, ask_ids: list[int], error: Exception) -> None:
        for ask_id in ask_ids:
            fut = self._waiting.pop(ask_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(error)

    def answered(self, answers: list[Answer]) -> None:
        waiting = self._waiting
        for answer in answers:
            fut = waiting.pop(answer.id, None)
            if fut is None or fut.done():  # expired, or the client went away
                continue
            if answer.code == OK:
                fut.set_result(answer.body)
            else:
                fut.set_exception(_error(answer.code, answer.body.decode(errors="replace")))

    def lost(self, protocol: _Protocol, error: Exception | None) -> None:
        if self._protocol is not protocol:
            return
        self._protocol = None
        log.error("p13n engine connection lost", extra={"error": repr(error)})
        self._fail(list(self._waiting), ProfileStoreDown("the p13n engine connection was lost"))

    async def _connect(self) -> None:
        async with self._connecting:  # one connection attempt at a time
            if self._protocol is not None:
                return
            now = time.monotonic()
            if now < self._down_until:
                raise ProfileStoreDown(self._down)
            loop = asyncio.get_running_loop()
            deadline = now + self._timeout_s
            while True:
                try:
                    sock = connect_unix(self._path)
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), sock=sock
                    )
                except OSError as e:
                    if time.monotonic() >= deadline:
                        self._down = f"the p13n engine is not answering: {e}"
                        self._down_until = time.monotonic() + DOWN_FOR_S
                        raise ProfileStoreDown(self._down) from None
                    await asyncio.sleep(_CONNECT_POLL_S)
                    continue
                self._protocol = protocol
                return


def _error(code: int, message: str) -> Exception:
    store_error = _STORE_ERRORS.get(code)
    if store_error is not None:
        return store_error(message)
    if 3000 <= code < 4000:
        return errors.Refused(code, message)
    return StoreUnavailable(message)


class _Protocol(FramedProtocol):
    """The worker's connection: its frames of answers go to the client."""

    def __init__(self, client: EngineClient) -> None:
        super().__init__()
        self._client = client

    def received(self, payload: bytes) -> None:
        self._client.answered(decode_answers(payload))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._client.lost(self, exc)
