"""The access log (``serve --access-log``): one JSON line per request, in the log format
of every other line, sampled under load.

Each worker writes at most ``access_log_per_s`` lines a second (a token bucket with a
second's burst): past it, requests are only counted, and the next line written says
how many were left out (``skipped``). A flood then costs the log a bounded number of
lines, and the lines that are written still say how much traffic they stand for.
Answers 500 and over are always written.

What a line holds: the client address (as refusals are charged to it), method, path
(never the query string, which may carry a key as ``td_write_key``), status, the
reason code of an error, the door and route, the body size sent and the time taken.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tdedge.access")


class AccessLog:
    def __init__(self, per_s: float, now: float) -> None:
        self._rate = per_s
        self._tokens = per_s
        self._at = now
        self._skipped = 0

    def request(
        self,
        now: float,
        *,
        client: str,
        method: str,
        path: str,
        status: int,
        error: str | None,
        door: str,
        route: str,
        sent_bytes: int,
        duration_ms: float,
    ) -> None:
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1 and status < 500:
            self._skipped += 1
            return
        self._tokens = max(0.0, self._tokens - 1)
        fields: dict[str, Any] = {
            "client": client,
            "method": method,
            "path": path,
            "status": status,
            "door": door,
            "route": route,
            "sent_bytes": sent_bytes,
            "duration_ms": round(duration_ms, 3),
        }
        if error is not None:
            fields["error"] = error
        if self._skipped:
            fields["skipped"] = self._skipped
            self._skipped = 0
        log.info("request", extra=fields)
