"""How much of a worker one client address may spend on requests that get refused.

A refused request still costs the worker: reading its body, inflating it, parsing and
checking it. One client sending nothing but refused requests back to back (records too
wide, made-up keys, gzip or bulk-import bombs) kept a worker's event loop busy, and
every other client's requests waited behind its. So each refused request (a 4xx but
408, and records kept as refusals though answered 200) is charged to its client
address: the time it took, at least ``MIN_CHARGE_S`` and at most ``MAX_CHARGE_S``. An
address may spend ``share`` of a worker's time that way, after a burst of ``burst_s``.
Past that, each of its requests waits its turn before the worker reads it, the turns
spaced by what its refused requests have been costing, and a request whose turn is more
than ``max_wait_s`` away is answered 429 at once, with Retry-After, unread.

Accepted requests are never charged, and an address that was never refused is not
tracked: a client that is not refused never waits here. An address is forgotten once
what it was charged is paid off.

This is the generic cell rate algorithm with a variable cost per request: an address
has a time ``paid_at`` by which its charges are paid at its share. A charge of ``c``
seconds moves it ``c / share`` later; a request may go at once while ``paid_at`` is at
most ``burst_s / share`` ahead of now, and otherwise waits until it is. Requests that
wait at the same time each reserve a turn (the address's recent cost) so they go one
after another, not all at once when the debt is paid; an accepted request gives its
reservation back.

Per worker, like the refusal budget (edge/refusals.py), and keyed by the same source: the
client address as the trusted proxies tell it (edge/peers.py). Behind a proxy that is not
trusted every client is the proxy's address and shares one allowance.

Pure: no I/O; the caller passes the clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# A refusal that took less still counts as this much: cheap refusals in bulk cost the
# worker's accept and parse steps, which a request's own timing does not see.
MIN_CHARGE_S = 0.001
# A refusal that took longer is charged this much: its time was mostly spent waiting
# (for a slow client's body, for the disk), not computing, and the doors' own limits
# (inflated bytes, gzip members, depth, width) bound what one request may compute.
# A client that sends a few large mistakes is not held up; a flood still is.
MAX_CHARGE_S = 0.1
# How fast an address's typical cost follows its latest refused requests.
ESTIMATE_WEIGHT = 0.5
MAX_SOURCES = 10_000


@dataclass(slots=True)
class Debt:
    paid_at: float  # when this address's charges are paid off at its share (monotonic s)
    estimate: float  # what one of its refused requests has recently cost (s)


@dataclass(frozen=True, slots=True)
class Turn:
    """A request's place: how long it waits before it is read, and what it reserved."""

    wait: float
    reserved: float


GO = Turn(0.0, 0.0)


class Throttle:
    def __init__(self, share: float, burst_s: float, max_wait_s: float) -> None:
        self._share = share
        self._ahead = burst_s / share if share > 0 else math.inf
        self._max_wait = max_wait_s
        self._debts: OrderedDict[str, Debt] = OrderedDict()

    def __bool__(self) -> bool:
        """Whether any address is being charged: if not, nobody waits."""
        return bool(self._debts)

    def turn(self, source: str, now: float) -> Turn | None:
        """When a request from ``source`` may be read, or None: not within ``max_wait_s``."""
        debt = self._debts.get(source)
        if debt is None:
            return GO
        if debt.paid_at <= now:
            del self._debts[source]
            return GO
        wait = max(0.0, debt.paid_at - self._ahead - now)
        if wait > self._max_wait:
            return None
        debt.paid_at += debt.estimate / self._share
        return Turn(wait, debt.estimate)

    def retry_after(self, source: str, now: float) -> int:
        """Whole seconds until a request from ``source`` would be read at once."""
        debt = self._debts.get(source)
        if debt is None:
            return 0
        return max(1, math.ceil(debt.paid_at - self._ahead - now))

    def settle(self, source: str, turn: Turn, cost: float, refused: bool, now: float) -> None:
        """Charge a refused request's ``cost`` (s) to ``source``; give an accepted
        request's reservation back."""
        if self._share <= 0:
            return
        debt = self._debts.get(source)
        if not refused:
            if debt is not None and turn.reserved:
                debt.paid_at -= turn.reserved / self._share
            return
        charge = min(max(cost, MIN_CHARGE_S), MAX_CHARGE_S)
        if debt is None:
            if len(self._debts) >= MAX_SOURCES:
                self._debts.popitem(last=False)
            debt = self._debts[source] = Debt(now, charge)
        else:
            self._debts.move_to_end(source)
            debt.estimate += ESTIMATE_WEIGHT * (charge - debt.estimate)
        debt.paid_at = max(debt.paid_at, now) + (charge - turn.reserved) / self._share
