"""The Batcher: a group per event-loop iteration, on the loop while the store's lock is
free, through the engine thread (never blocking the loop) while another process has it."""

from __future__ import annotations

import asyncio
import fcntl
import threading
from pathlib import Path

import msgspec

from tdedge.realtime.batcher import Batcher
from tdedge.realtime.engine import Engine, Request
from tests.unit.realtime.test_engine import EXAMPLE, T0, service_of

SERVICE = service_of(EXAMPLE)


class CountingEngine(Engine):
    """Records the thread and size of every group it runs."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine.store, engine.batch)
        self.groups: list[tuple[str, int]] = []

    def decide(self, requests: object, now_ms: int) -> list[bytes | Exception]:
        assert isinstance(requests, list)
        self.groups.append((threading.current_thread().name, len(requests)))
        return super().decide(requests, now_ms)

    def try_decide(self, requests: object, now_ms: int) -> list[bytes | Exception] | None:
        assert isinstance(requests, list)
        found = super().try_decide(requests, now_ms)
        if found is not None:
            self.groups.append((threading.current_thread().name, len(requests)))
        return found


def request(i: int) -> Request:
    event = {"td_client_id": f"c{i % 3}", "td_path": "/retail", "amount": 1}
    return Request(SERVICE, "pageviews", event, SERVICE.event_keys(event))


def test_one_iterations_requests_share_one_group_on_the_loop(engine: Engine) -> None:
    counting = CountingEngine(engine)
    batcher = Batcher(counting, lambda: T0 / 1000)

    async def run() -> list[bytes]:
        return await asyncio.gather(*(batcher.submit(request(i)) for i in range(9)))

    answers = asyncio.run(run())
    assert all("offers" in msgspec.json.decode(a) for a in answers)
    assert counting.groups == [("MainThread", 9)]
    (profile,) = engine.store.find(SERVICE.name, ["td_client_id=c0"])
    assert profile.events == 3


def test_a_lock_held_elsewhere_sends_groups_to_the_thread_without_blocking_the_loop(
    engine: Engine, tmp_path: Path
) -> None:
    counting = CountingEngine(engine)
    batcher = Batcher(counting, lambda: T0 / 1000)
    other = (tmp_path / "p.lock").open("ab")  # another process's hold on the store
    fcntl.flock(other.fileno(), fcntl.LOCK_EX)

    async def run() -> list[bytes]:
        first = [batcher.submit(request(i)) for i in range(4)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in first)  # waiting for the lock, the loop runs on
        later = [batcher.submit(request(i)) for i in range(4, 6)]
        await asyncio.sleep(0.05)
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
        return await asyncio.gather(*first, *later)

    try:
        answers = asyncio.run(run())
    finally:
        other.close()
    assert len(answers) == 6
    # Both groups went to the thread, in order (the second followed the first there
    # although the loop could have tried the lock itself by then).
    assert counting.groups == [("p13n-engine", 4), ("p13n-engine", 2)]

    async def once() -> bytes:
        return await batcher.submit(request(7))

    asyncio.run(once())  # with the thread idle again, groups run on the loop
    assert counting.groups[-1] == ("MainThread", 1)
