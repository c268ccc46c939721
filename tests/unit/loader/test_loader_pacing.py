"""When the loader commits: the wait grows with the arrival rate (loader/pacing.py)."""

from __future__ import annotations

import pytest

from tdedge.config import Settings
from tdedge.loader.pacing import Pacing

PACING = Pacing(max_records=100_000, max_wait_s=0.25, busy_wait_s=1.0, busy_rate=2_000.0)


def test_nothing_waiting_is_never_due() -> None:
    assert not PACING.due(0, 10.0)


def test_a_full_batch_is_due_at_once() -> None:
    assert PACING.due(100_000, 0.0)


def test_a_trickle_waits_max_wait() -> None:
    # 20 records/s: 5 records after 0.25 s.
    assert not PACING.due(4, 0.24)
    assert PACING.due(5, 0.26)


def test_a_busy_stream_waits_busy_wait() -> None:
    # 9,000 records/s: past busy_rate, so one commit a second.
    assert not PACING.due(2_250, 0.25)
    assert not PACING.due(8_900, 0.99)
    assert PACING.due(9_000, 1.0)


def test_the_wait_rises_linearly_with_the_rate() -> None:
    # 1,000 records/s is half of busy_rate: half-way from 0.25 s to 1.0 s.
    assert PACING.wait_s(600, 0.6) == pytest.approx(0.625)
    assert not PACING.due(600, 0.6)
    assert PACING.due(630, 0.63)


def test_from_settings_never_waits_less_busy_than_idle() -> None:
    pacing = Pacing.of(Settings(loader_batch_max_wait_s=0.5, loader_batch_busy_wait_s=0.1))
    assert pacing.wait_s(1_000_000, 1.0) == 0.5
    assert Pacing.of(Settings()).busy_wait_s == Settings().loader_batch_busy_wait_s
