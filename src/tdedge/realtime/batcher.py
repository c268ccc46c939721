"""How a worker's requests reach the engine: a group per event-loop iteration.

The first request of an iteration schedules one engine run after everything else the
iteration handles (as the journal schedules its write), so the requests that became
ready together — typically those one journal fsync released — share one store
transaction, one lock and one commit.

The run happens on the event loop itself when the store's lock is free, which with one
worker is always: no thread hand-off, no GIL passed back and forth at every SQLite step
(which cost more CPU than the decisions). When another process holds the lock, the
group goes to the engine thread, which waits for it, so the loop is never blocked by
another process. While the thread has work, later groups follow it there: groups stay
in order, and the engine (its store connection and cache) is used by one thread at a
time. The queue is bounded by the door's concurrency limit (``limits.concurrency``).

Each request comes with a tag saying where its answer goes, and one ``settle`` call per
group delivers the answers: futures in an edge worker running the engine itself
(``submit``), a frame per connection in the engine process (``realtime/host.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from tdedge.realtime.engine import Engine, Request
from tdedge.realtime.errors import StoreUnavailable
from tdedge.realtime.offers import EMPTY

log = logging.getLogger("tdedge.p13n")

# Requests sharing a store transaction, at most: a bigger backlog runs as several
# groups, so other callbacks of the loop get a turn in between.
MAX_GROUP = 256

DECISIONS = Counter("tdedge_p13n_decisions_total", "p13n decisions made", ["offers"])
_NO_OFFERS = DECISIONS.labels("none")
_SOME_OFFERS = DECISIONS.labels("some")
GROUP = Histogram(
    "tdedge_p13n_group_size",
    "Profile updates sharing one store transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
STORE_SECONDS = Histogram(
    "tdedge_p13n_store_seconds",
    "Time to stitch, update, commit and evaluate one group of requests",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0),
)

Result = bytes | Exception
_Waiter = tuple[Request, Any]  # a request and its tag
# Delivers a group's answers: the tags of its requests and their results, in order.
Settle = Callable[[list[Any], list[Result]], None]


class Batcher:
    """Groups requests for the engine; ``add`` and ``submit`` are called on its loop."""

    def __init__(
        self, engine: Engine, clock: Callable[[], float], settle: Settle | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._settle = settle or settle_futures
        self._pending: list[_Waiter] = []
        # Groups given to the engine thread and not answered yet (touched on the loop).
        self._offloaded = 0
        self._queue: list[tuple[list[_Waiter], asyncio.AbstractEventLoop]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="p13n-engine", daemon=True)
        self._thread.start()

    async def decide(self, request: Request, body: bytes, generation: int) -> bytes:
        """The answer to ``request`` (what ``EngineClient.decide`` does in another process)."""
        return await self.submit(request)

    def set_timeout(self, timeout_s: float) -> None:
        self._engine.store.set_timeout(timeout_s)

    def submit(self, request: Request) -> asyncio.Future[bytes]:
        """The answer to ``request``, as a future (with the default ``settle``)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.add(request, fut)
        return fut

    def add(self, request: Request, tag: Any) -> None:
        """Queue ``request`` for this iteration's group; its answer goes to ``tag``."""
        if not self._pending:
            loop = asyncio.get_running_loop()
            loop.call_soon(self._flush, loop)
        self._pending.append((request, tag))

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        if self._pending:
            loop.call_soon(self._flush, loop)
        if self._offloaded == 0:
            results = self._decide(group, wait=False)
            if results is not None:
                self._settle([tag for _, tag in group], results)
                return
        self._offloaded += 1
        with self._cond:
            self._queue.append((group, loop))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                # What queued while the lock was waited for runs as one group.
                group, loop = self._queue.pop(0)
                groups = 1
                while self._queue and len(group) + len(self._queue[0][0]) <= MAX_GROUP:
                    group = group + self._queue.pop(0)[0]
                    groups += 1
            results = self._decide(group, wait=True)
            assert results is not None
            try:
                loop.call_soon_threadsafe(self._done, groups, group, results)
            except RuntimeError:  # the loop is closed: the worker is stopping
                log.info("p13n answers dropped: event loop closed")

    def _done(self, groups: int, group: list[_Waiter], results: list[Result]) -> None:
        self._offloaded -= groups
        self._settle([tag for _, tag in group], results)

    def _decide(self, group: list[_Waiter], wait: bool) -> list[Result] | None:
        """Every request's answer or error; None when ``wait`` is off and the store's
        lock is held elsewhere."""
        started = time.perf_counter()
        requests = [r for r, _ in group]
        now_ms = int(self._clock() * 1000)
        results: Sequence[Result] | None
        try:
            if wait:
                results = self._engine.decide(requests, now_ms)
            else:
                results = self._engine.try_decide(requests, now_ms)
                if results is None:
                    return None
        except StoreUnavailable as e:
            results = [e] * len(group)
        except Exception as e:
            log.exception("p13n engine failed")
            results = [e] * len(group)
        STORE_SECONDS.observe(time.perf_counter() - started)
        GROUP.observe(len(group))
        _count(results)
        return list(results)


def _count(results: Sequence[Result]) -> None:
    # Counted per group: a prometheus increment per request costs more than the count.
    none = results.count(EMPTY)
    some = sum(1 for r in results if type(r) is bytes) - none
    if some:
        _SOME_OFFERS.inc(some)
    if none:
        _NO_OFFERS.inc(none)


def settle_futures(futures: list[asyncio.Future[bytes]], results: list[Result]) -> None:
    for fut, result in zip(futures, results, strict=True):
        if fut.done():  # the client went away
            continue
        if isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)
