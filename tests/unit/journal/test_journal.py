"""The embedded SQLite journal's own behaviour: group commit, shards, free disk, fsync
order. What every journal does is in tests/unit/contracts/test_journal.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest

from tdedge import metrics
from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal.envelope import Envelope, decode, entries
from tdedge.journal.sqlite import WAL_CHECKPOINT_BYTES, SQLiteJournal, SQLiteJournalReader


def env(i: int) -> Envelope:
    return Envelope(1_700_000_000_000 + i, "legacy", "db", "t", b"h" * 32, b'{"i":%d}' % i)


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=str(tmp_path), **kw)  # type: ignore[arg-type]


def append_all(journal: SQLiteJournal, envs: list[Envelope]) -> None:
    async def go() -> None:
        await asyncio.gather(*(journal.append(e) for e in envs))

    asyncio.run(go())


def _commits() -> float:
    for metric in metrics.JOURNAL_COMMIT_BATCH.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0


def test_concurrent_appends_share_fsyncs_and_all_survive_reopen(tmp_path: Path) -> None:
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    commits_before = _commits()
    envs = [env(i) for i in range(2000)]
    append_all(journal, envs)
    commits = _commits() - commits_before
    journal.close()
    assert 1 <= commits < len(envs) / 4  # group commit: far fewer fsyncs than records

    reader = SQLiteJournalReader(s.journal_dir)
    got = entries(reader.read({}, limit=10_000))
    reader.close()
    assert [e.envelope for e in got] == envs
    # One row per group commit; its entries share the row's seq.
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and seqs[0] == 1
    assert len(set(seqs)) == commits
    assert {e.shard for e in got} == {"shard-00"}


def append_each(journal: SQLiteJournal, envs: list[Envelope]) -> None:
    """One group per envelope, so seq n holds envelope n-1."""
    for e in envs:
        append_all(journal, [e])


def test_each_live_journal_owns_a_shard_and_a_dead_ones_shard_is_reused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    a, b = SQLiteJournal(s), SQLiteJournal(s)
    assert (a.shard, b.shard) == ("shard-00", "shard-01")
    append_all(a, [env(1)])
    append_all(b, [env(2)])
    a.close()
    c = SQLiteJournal(s)
    assert c.shard == "shard-00"
    append_all(c, [env(3)])
    reader = SQLiteJournalReader(s.journal_dir)
    got = {(e.shard, e.seq, e.envelope.received_ms) for e in entries(reader.read({}, 100))}
    assert got == {
        ("shard-00", 1, env(1).received_ms),
        ("shard-00", 2, env(3).received_ms),
        ("shard-01", 1, env(2).received_ms),
    }
    b.close()
    c.close()
    reader.close()


def test_low_disk_refuses_appends(tmp_path: Path) -> None:
    journal = SQLiteJournal(settings(tmp_path, journal_min_free_bytes=1 << 62))
    assert not journal.writable()
    with pytest.raises(JournalUnavailable, match="disk_full"):
        append_all(journal, [env(1)])
    journal.close()


class EnvelopeBeforeImports(msgspec.Struct, array_like=True):
    """The Envelope as journals written before bulk-import ids hold it."""

    received_ms: int
    door: str
    database: str
    table: str
    key_hash: bytes
    record: bytes
    reject: str = ""


def test_an_envelope_written_before_import_ids_still_decodes(tmp_path: Path) -> None:
    old = EnvelopeBeforeImports(1, "legacy", "db", "t", b"h" * 32, b"{}", "bad")
    assert decode(msgspec.msgpack.encode(old)) == Envelope(
        1, "legacy", "db", "t", b"h" * 32, b"{}", "bad", import_id="", import_index=0
    )
    # A journal row written by the old code, read by the reader.
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    append_all(journal, [env(1)])
    journal.close()
    with sqlite3.connect(s.journal_dir / "shard-00.sqlite") as conn:
        conn.execute("UPDATE journal SET envelopes = ?", (msgspec.msgpack.encode([old, old]),))
    conn.close()
    got = SQLiteJournalReader(s.journal_dir).read({}, 9)
    assert [e.import_id for g in got for e in g.envelopes] == ["", ""]


def test_no_append_returns_before_an_fsync_that_began_after_its_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 200 means durable: an append waits for the fdatasync covering its write."""
    import os
    import threading

    release = threading.Event()
    syncs: list[int] = []
    real_fdatasync = os.fdatasync

    def held_fdatasync(fd: int) -> None:
        syncs.append(fd)
        release.wait(10)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", held_fdatasync)
    s = settings(tmp_path)
    journal = SQLiteJournal(s)

    async def go() -> None:
        task = asyncio.ensure_future(journal.append(env(1)))
        deadline = time.monotonic() + 5
        while not syncs and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert syncs, "the syncer never started an fsync"
        await asyncio.sleep(0.2)
        assert not task.done()  # written to the WAL, fsync still running: no answer yet
        release.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    journal.close()
    assert [e.envelope for e in entries(SQLiteJournalReader(s.journal_dir).read({}, 9))] == [env(1)]


def test_the_wal_stays_short_while_nothing_is_released(tmp_path: Path) -> None:
    """No loader (or a lake that refuses every commit): the records stay, but the WAL
    does not grow with every group commit's rewritten pages, about 60 times the
    records' own size."""
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    envs = [env(i) for i in range(1200)]
    largest = 0
    wal = s.journal_dir / f"{journal.shard}.sqlite-wal"
    for e in envs:
        append_all(journal, [e])  # a group commit each
        largest = max(largest, wal.stat().st_size)
    journal.close()
    assert largest < 2 * WAL_CHECKPOINT_BYTES
    reader = SQLiteJournalReader(s.journal_dir)
    assert [e.envelope for e in entries(reader.read({}, limit=10_000))] == envs
    reader.close()
