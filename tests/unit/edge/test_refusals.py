"""The refusal budget: per address and in all, bounded memory, every refusal accounted."""

from __future__ import annotations

import msgspec
import pytest

from tdedge.config import Settings
from tdedge.edge import refusals
from tdedge.edge.refusals import RefusalBudget, keep_bytes, kept_body, source_of

SETTINGS = Settings(refusals_kept_per_s=2.0, refusals_kept_burst=3, refusals_kept_total_per_s=5.0)


def test_each_address_has_a_burst_then_a_rate() -> None:
    budget = RefusalBudget(SETTINGS, now=0.0)
    assert [budget.admit("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.admit("b", 0.0)  # another address has its own budget
    assert not budget.admit("a", 0.4)  # 0.8 of a refusal earned back
    assert budget.admit("a", 0.5)
    assert not budget.admit("a", 0.5)


def test_all_addresses_together_are_capped_too() -> None:
    budget = RefusalBudget(SETTINGS, now=0.0)
    admitted = sum(budget.admit(f"10.0.0.{i}", 0.0) for i in range(20))
    assert admitted == 5  # the total's burst, though every address has 3 of its own


def test_ipv6_clients_count_by_their_64() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9")
    assert source_of("2001:db8:1:2::1") != source_of("2001:db8:1:3::1")
    assert source_of("192.0.2.1") == "192.0.2.1"
    assert source_of("not an address") == "not an address"


def test_summaries_count_every_refusal_not_kept_and_start_over() -> None:
    budget = RefusalBudget(SETTINGS, now=0.0)
    for ms, reason in [(5, "unknown_key"), (3, "unknown_key"), (9, "invalid_json")]:
        budget.count("192.0.2.1", "legacy", reason, ms)
    budget.count("192.0.2.1", "pixel", "missing_key", 4)
    assert budget.pending
    envs = budget.summaries(60_000)
    assert not budget.pending and budget.summaries(60_001) == []
    by_door = {e.door: e for e in envs}
    assert set(by_door) == {"legacy", "pixel"}
    legacy = by_door["legacy"]
    # Stamped when made: it waits in the journal from then on, not from its first refusal.
    assert (legacy.reject, legacy.received_ms, legacy.key_hash) == (
        "refusals_not_kept",
        60_000,
        b"",
    )
    assert msgspec.json.decode(legacy.record) == {
        "source": "192.0.2.1",
        "refusals_not_kept": 3,
        "reasons": {"unknown_key": 2, "invalid_json": 1},
        "first_received_ms": 3,
        "last_received_ms": 9,
    }


def test_memory_is_bounded_whatever_the_number_of_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(refusals, "MAX_SOURCES", 10)
    budget = RefusalBudget(SETTINGS, now=0.0)
    for i in range(100):
        budget.admit(f"10.0.{i}.1", 0.0)
        budget.count(f"10.0.{i}.1", "legacy", "unknown_key", i)
    assert len(budget._buckets) == 10
    envs = budget.summaries(1_000)
    assert len(envs) == 11
    counts = {msgspec.json.decode(e.record)["source"]: e for e in envs}
    other = msgspec.json.decode(counts[refusals.OTHER_SOURCES].record)
    assert other["refusals_not_kept"] == 90


def test_kept_bodies_are_capped_and_carry_no_nul() -> None:
    assert kept_body(b"abcdef", 4) == b"abcd"
    assert kept_body(b"a\x00b", 64) == "a\ufffdb".encode()
    assert len(kept_body(b"\x00" * 100, 10)) == 10
    assert keep_bytes(Settings(), "unknown_key") == 1024
    assert keep_bytes(Settings(), "invalid_json") == 64 * 1024
