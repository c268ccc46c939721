"""How long the supervisor waits before restarting a child that died."""

from __future__ import annotations

from tdedge.server import RESTART_MAX_S, RESTART_MIN_S, restart_delay


def test_a_child_that_keeps_dying_at_start_is_restarted_ever_more_slowly() -> None:
    waits = []
    previous = None
    for _ in range(9):
        previous = restart_delay(previous, uptime_s=1.5)
        waits.append(previous)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert (RESTART_MIN_S, RESTART_MAX_S) == (0.5, 30.0)


def test_a_child_that_ran_a_while_is_restarted_at_once() -> None:
    assert restart_delay(None, uptime_s=0.1) == RESTART_MIN_S  # its first death
    assert restart_delay(16.0, uptime_s=3600.0) == RESTART_MIN_S  # it had recovered
