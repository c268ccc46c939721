"""A worker's ring of p13n decisions and the files the console reads (realtime/decisions.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tdedge.realtime import decisions
from tdedge.realtime.decisions import Decisions


def add(ring: Decisions, n: int, account: int = 1) -> None:
    ring.add(1_000 * n, account, "web", "retail", "pageviews", [f"id:{n}"], b'{"offers":{}}')


def test_the_ring_keeps_the_newest_and_each_account_sees_its_own(tmp_path: Path) -> None:
    ring = Decisions(tmp_path, kept=3)
    for n in range(5):
        add(ring, n)
    add(ring, 5, account=2)
    ring.write()
    mine = decisions.recent(tmp_path, 1, limit=10)
    # The ring holds 3: the account-2 decision pushed the oldest of account 1 out too.
    assert [d.keys for _, d in mine] == [("id:4",), ("id:3",)]
    assert [d.keys for _, d in decisions.recent(tmp_path, 2, limit=10)] == [("id:5",)]
    assert decisions.recent(tmp_path, 1, limit=1)[0][1].keys == ("id:4",)
    ident, newest = mine[0]
    assert ident == f"{os.getpid()}-5"
    assert decisions.find(tmp_path, 1, ident) == newest
    assert decisions.find(tmp_path, 2, ident) is None  # another account's id
    # A seq past what int() reads from a string (4,300 digits) is only another unknown id.
    huge = f"{os.getpid()}-{'9' * 5000}"
    for bad in ("", "x-1", f"{os.getpid()}-", "../1-1", f"{os.getpid()}-99", huge):
        assert decisions.find(tmp_path, 1, bad) is None


def test_kept_zero_keeps_nothing(tmp_path: Path) -> None:
    ring = Decisions(tmp_path, kept=0)
    add(ring, 1)
    ring.write()
    assert decisions.recent(tmp_path, 1, limit=10) == []
    assert not decisions.folder(tmp_path).exists()


def test_a_burst_is_written_once_its_second_is_up(tmp_path: Path) -> None:
    async def burst() -> None:
        ring = Decisions(tmp_path, kept=100)
        add(ring, 1)  # the first is written at once
        assert len(decisions.recent(tmp_path, 1, limit=10)) == 1
        add(ring, 2)
        add(ring, 3)
        assert len(decisions.recent(tmp_path, 1, limit=10)) == 1
        await asyncio.sleep(decisions.WRITE_EVERY_S + 0.5)
        assert len(decisions.recent(tmp_path, 1, limit=10)) == 3

    asyncio.run(burst())
