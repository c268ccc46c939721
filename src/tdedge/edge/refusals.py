"""What a refused request leaves for operators, and what it may cost to keep.

Every refusal at a door is counted (``tdedge_refusals_total{door,reason,kept}``) and,
within a budget, journaled as an import-error row holding the first bytes of its body:
``Settings.refused_keep_bytes`` (64 KiB), or ``refused_key_keep_bytes`` (1 KiB) when the
key was the problem — anyone can send those, in bulk, with made-up keys.

The budget is a token bucket per client address and one for all addresses together,
in each worker. A refusal over budget is only counted; every
``refusals_summary_interval_s`` one row per address and door (reason
``refusals_not_kept``) says how many were not kept, and why. An IPv6 client counts by
its /64, which a client usually holds whole. At most ``MAX_SOURCES`` addresses are
remembered (least recently seen forgotten first); summaries of more addresses than that
are merged into one row for ``"other addresses"``: the memory stays bounded whatever the
traffic, and no refusal goes uncounted.

Pure: no I/O; the caller passes the clock.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec

from tdedge.config import Settings
from tdedge.journal.envelope import Envelope

# Reasons that mean "this key may not write here": refused before the body mattered.
KEY_REASONS = frozenset(
    {
        "missing_key",
        "unknown_key",
        "revoked_key",
        "foreign_key",
        "key_in_url",
        "p13n_401",
        "p13n_403",
    }
)
SUMMARY_REASON = "refusals_not_kept"
MAX_SOURCES = 10_000
OTHER_SOURCES = "other addresses"

# U+FFFD in UTF-8: what the loader shows for bytes that are not text anyway.
_REPLACEMENT = "\ufffd".encode()
_encode = msgspec.json.Encoder().encode


def kept_body(body: bytes | memoryview, limit: int) -> bytes:
    """The first ``limit`` bytes of ``body``, NUL bytes shown as U+FFFD.

    A refused body may be anything (gzip, binary); the import errors keep it as text.
    NUL bytes are never text in a request body (JSON escapes them), and runs of them
    made the lake's commit of the row take seconds: DuckLake's inlined rows handle each
    NUL at a cost that grows with the string (64 KiB of them took ~4 s per row here).
    """
    kept = bytes(body[:limit])
    if b"\x00" in kept:
        kept = kept.replace(b"\x00", _REPLACEMENT)[:limit]
    return kept


def keep_bytes(settings: Settings, reason: str) -> int:
    """How much of a body refused for ``reason`` is kept."""
    if reason in KEY_REASONS:
        return settings.refused_key_keep_bytes
    return settings.refused_keep_bytes


def source_of(address: str) -> str:
    """The budget an address draws on: itself, or its /64 for IPv6."""
    if ":" not in address:
        return address
    try:
        network = ipaddress.IPv6Network((address, 64), strict=False)
    except ValueError:
        return address
    return str(network)


@dataclass(slots=True)
class TokenBucket:
    """``burst`` takes at once, refilled at ``rate`` per second."""

    rate: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(slots=True)
class Tally:
    """Refusals of one address at one door that were counted, not kept."""

    first_ms: int
    last_ms: int
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, received_ms: int, n: int = 1) -> None:
        self.count += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n
        self.first_ms = min(self.first_ms, received_ms)
        self.last_ms = max(self.last_ms, received_ms)


class RefusalBudget:
    def __init__(self, settings: Settings, now: float) -> None:
        self._rate = settings.refusals_kept_per_s
        self._burst = float(settings.refusals_kept_burst)
        total = settings.refusals_kept_total_per_s
        self._all = TokenBucket.full(total, max(self._burst, total), now)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._tallies: dict[tuple[str, str], Tally] = {}

    def admit(self, source: str, now: float) -> bool:
        """Whether a refusal from ``source`` may be kept now (taking its share if so)."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= MAX_SOURCES:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = TokenBucket.full(self._rate, self._burst, now)
        else:
            self._buckets.move_to_end(source)
        # The address's own budget first: one loud address does not spend everyone's.
        return bucket.take(now) and self._all.take(now)

    def count(self, source: str, door: str, reason: str, received_ms: int) -> None:
        """Remember a refusal that was not kept, for the next summary."""
        key = (source, door)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= MAX_SOURCES:
                key = (OTHER_SOURCES, door)
                tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = Tally(received_ms, received_ms)
        tally.add(reason, received_ms)

    @property
    def pending(self) -> bool:
        return bool(self._tallies)

    def summaries(self, now_ms: int) -> list[Envelope]:
        """One import-error envelope per address and door counted since the last call.

        Each is stamped ``now_ms``, when it is made, not with its first refusal's time
        (that and the last one's are in its body): it reaches the journal now, and a row
        stamped up to a summary interval earlier would show as that long a wait in the
        loader's lag, where nothing waited."""
        tallies, self._tallies = self._tallies, {}
        return [
            Envelope(
                now_ms,
                door,
                "",
                "",
                b"",
                _encode(
                    {
                        "source": source,
                        "refusals_not_kept": tally.count,
                        "reasons": tally.reasons,
                        "first_received_ms": tally.first_ms,
                        "last_received_ms": tally.last_ms,
                    }
                ),
                reject=SUMMARY_REASON,
            )
            for (source, door), tally in tallies.items()
        ]
