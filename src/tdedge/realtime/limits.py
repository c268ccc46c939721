"""The engine's throughput and concurrency limits (the door's 429s).

Treasure Data answers 429 with code 2003 when its event stream is over its throughput
and 2013 when its functions are over their concurrency; tdedge keeps the same codes for
the same two situations. Limits are per worker process (a server's limit divided among
its workers): exact enough, and no request waits on another process to be counted.
"""

from __future__ import annotations

import math

THROUGHPUT = 2003
CONCURRENCY = 2013


class TokenBucket:
    """``rate`` events per second with bursts of up to one second's worth."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after_s(self) -> int:
        """Whole seconds until a token is back (at least 1: Retry-After is in seconds)."""
        return max(1, math.ceil((1.0 - self._tokens) / self.rate))


class Limiter:
    def __init__(self, workers: int) -> None:
        self._workers = max(1, workers)
        self._bucket: TokenBucket | None = None
        self._concurrency = 0
        self.in_flight = 0

    def configure(self, events_per_second: float | None, concurrency: int, now: float) -> None:
        rate = None if events_per_second is None else events_per_second / self._workers
        if rate is None:
            self._bucket = None
        elif self._bucket is None or self._bucket.rate != rate:
            self._bucket = TokenBucket(rate, now)
        self._concurrency = max(1, math.ceil(concurrency / self._workers))

    def admit(self, now: float) -> tuple[int, int] | None:
        """None to go ahead (then call ``done``), else (code, Retry-After seconds)."""
        if self.in_flight >= self._concurrency:
            return CONCURRENCY, 1
        if self._bucket is not None and not self._bucket.take(now):
            return THROUGHPUT, self._bucket.retry_after_s()
        self.in_flight += 1
        return None

    def done(self) -> None:
        self.in_flight -= 1
