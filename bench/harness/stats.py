"""Percentiles, and rounds: runs repeated in turn, compared by the median of their ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def alternate(rounds: int, *runs: Callable[[int], T]) -> list[list[T]]:
    """Every run once per round, in turn (round 0: a, b, …; round 1: a, b, …), each
    given its round: a machine that speeds up or slows down during the bench moves every
    run alike. One list of results per round."""
    return [[run(r) for run in runs] for r in range(rounds)]


def median_ratio(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The median of ``a / b`` over pairs measured together (a run and its reference in
    the same round); pairs with ``b`` 0 are left out, None when none is left."""
    ratios = [a / b for a, b in pairs if b]
    return statistics.median(ratios) if ratios else None
