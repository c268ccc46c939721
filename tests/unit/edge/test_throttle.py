"""The throttle: what an address's refused requests may take of a worker (pure)."""

from __future__ import annotations

import pytest

from tdedge.edge.throttle import GO, MAX_CHARGE_S, MIN_CHARGE_S, Throttle, Turn


def refuse(throttle: Throttle, source: str, cost: float, now: float) -> Turn | None:
    turn = throttle.turn(source, now)
    if turn is not None:
        throttle.settle(source, turn, cost, True, now)
    return turn


def test_an_address_never_refused_is_not_tracked_and_never_waits() -> None:
    throttle = Throttle(share=0.1, burst_s=0.0, max_wait_s=1.0)
    assert not throttle
    turn = throttle.turn("10.0.0.1", 0.0)
    assert turn == GO
    throttle.settle("10.0.0.1", turn, 5.0, False, 0.0)  # accepted: never charged
    assert not throttle
    assert throttle.turn("10.0.0.1", 0.0) == GO


def test_refusals_within_the_burst_go_at_once() -> None:
    throttle = Throttle(share=0.1, burst_s=1.0, max_wait_s=1.0)
    # 1 s of refusals in one instant: the whole burst.
    for _ in range(10):
        turn = refuse(throttle, "a", 0.1, 0.0)
        assert turn is not None and turn.wait == 0.0
    # Past the burst, a request waits for its turn.
    refuse(throttle, "a", 0.1, 0.0)
    turn = throttle.turn("a", 0.0)
    assert turn is not None and turn.wait > 0.0


def test_past_its_share_an_address_waits_its_turn_and_then_gets_429() -> None:
    throttle = Throttle(share=0.1, burst_s=0.0, max_wait_s=1.0)
    refuse(throttle, "a", 0.01, 0.0)  # 10 ms at a 10 % share: paid off at 0.1 s
    turn = throttle.turn("a", 0.0)
    assert turn is not None
    assert turn.wait == pytest.approx(0.1)
    assert turn.reserved == pytest.approx(0.01)
    # Another request at the same time waits for the turn after that one.
    second = throttle.turn("a", 0.0)
    assert second is not None and second.wait == pytest.approx(0.2)
    # Far behind: refused at once, with the seconds until a request would go.
    refuse(throttle, "a", 0.1, 0.0)
    assert throttle.turn("a", 0.0) is None
    assert throttle.retry_after("a", 0.0) >= 1
    # Other addresses are not held up.
    assert throttle.turn("b", 0.0) == GO


def test_an_accepted_request_gives_its_turn_back() -> None:
    throttle = Throttle(share=0.1, burst_s=0.0, max_wait_s=10.0)
    refuse(throttle, "a", 0.01, 0.0)
    turn = throttle.turn("a", 0.0)
    assert turn is not None and turn.reserved
    throttle.settle("a", turn, 0.5, False, 0.0)
    again = throttle.turn("a", 0.0)
    assert again is not None and again.wait == pytest.approx(turn.wait)


def test_a_paid_off_address_is_forgotten() -> None:
    throttle = Throttle(share=0.1, burst_s=0.0, max_wait_s=1.0)
    refuse(throttle, "a", 0.01, 0.0)
    assert throttle
    assert throttle.turn("a", 1.0) == GO
    assert not throttle


def test_cheap_refusals_are_charged_a_floor() -> None:
    throttle = Throttle(share=0.5, burst_s=0.0, max_wait_s=10.0)
    refuse(throttle, "a", 0.0, 0.0)
    turn = throttle.turn("a", 0.0)
    assert turn is not None and turn.wait == pytest.approx(MIN_CHARGE_S / 0.5)


def test_share_zero_turns_it_off() -> None:
    throttle = Throttle(share=0.0, burst_s=1.0, max_wait_s=1.0)
    for _ in range(100):
        assert refuse(throttle, "a", 10.0, 0.0) == GO
    assert not throttle


def test_a_flood_of_refusals_is_held_to_its_share() -> None:
    """One address sending refused requests back to back, each costing 2 ms of the
    worker: over 10 s of its time it gets 10 % of it, plus the burst."""
    throttle = Throttle(share=0.1, burst_s=0.5, max_wait_s=5.0)
    now, spent = 0.0, 0.0
    while now < 10.0:
        turn = throttle.turn("a", now)
        assert turn is not None
        now += turn.wait
        throttle.settle("a", turn, 0.002, True, now)
        now += 0.002
        spent += 0.002
    assert spent == pytest.approx(0.1 * 10 + 0.5, rel=0.1)


def test_a_long_refusal_is_charged_at_most_a_cap() -> None:
    throttle = Throttle(share=0.1, burst_s=0.0, max_wait_s=100.0)
    refuse(throttle, "a", 60.0, 0.0)  # a slow client's upload, refused at its end
    turn = throttle.turn("a", 0.0)
    assert turn is not None and turn.wait == pytest.approx(MAX_CHARGE_S / 0.1)
