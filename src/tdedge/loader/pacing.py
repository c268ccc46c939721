"""When the loader commits a batch: freshness against the cost of a commit.

A DuckLake commit costs about the same CPU whatever its size (~25 ms here for 10 or
10,000 rows: the catalog's queries, not the rows). Committing every 0.25 s is cheap
while records trickle in and keeps them fresh; under a steady stream the same rhythm
would spend most of the loader's CPU on commits, taken from the edge on a small
machine. So the wait grows with the arrival rate:

- a full batch (``max_records`` waiting) is committed at once;
- otherwise a batch waits until its oldest record is ``max_wait_s`` old while records
  trickle in, rising linearly with the rate to ``busy_wait_s`` at ``busy_rate``
  records per second and above (one commit a second instead of four at 9k records/s).

The rate is read from the batch itself: records waiting / age of the oldest of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdedge.config import Settings


@dataclass(frozen=True, slots=True)
class Pacing:
    max_records: int
    max_wait_s: float
    busy_wait_s: float
    busy_rate: float  # records per second

    @classmethod
    def of(cls, settings: Settings) -> Pacing:
        return cls(
            max_records=settings.loader_batch_max_records,
            max_wait_s=settings.loader_batch_max_wait_s,
            busy_wait_s=max(settings.loader_batch_max_wait_s, settings.loader_batch_busy_wait_s),
            busy_rate=settings.loader_batch_busy_rate,
        )

    def wait_s(self, waiting: int, lag_s: float) -> float:
        """How old the oldest record may get before the batch is committed."""
        if lag_s <= 0 or self.busy_rate <= 0:
            return self.max_wait_s
        busy = min(1.0, waiting / lag_s / self.busy_rate)
        return self.max_wait_s + (self.busy_wait_s - self.max_wait_s) * busy

    def due(self, waiting: int, lag_s: float) -> bool:
        """Whether ``waiting`` records, the oldest ``lag_s`` old, make a batch now."""
        if waiting <= 0:
            return False
        return waiting >= self.max_records or lag_s >= self.wait_s(waiting, lag_s)
