"""Large uploads in the SQLite journal: staged part by part, published whole; and reads
bounded by bytes as well as records."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest

from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal.envelope import Envelope, entries
from tdedge.journal.sqlite import (
    SQLiteJournal,
    SQLiteJournalReader,
    SQLiteStaging,
    shard_path,
)


def env(i: int, size: int = 10) -> Envelope:
    record = b'{"i":%d,"pad":"%s"}' % (i, b"x" * size)
    return Envelope(1_700_000_000_000 + i, "import", "db", "t", b"h" * 32, record)


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path))


def parts_left(s: Settings, shard: str) -> int:
    with sqlite3.connect(shard_path(s.journal_dir, shard)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM parts").fetchone()
    return int(n)


def test_staged_parts_are_invisible_until_published_then_read_in_order(tmp_path: Path) -> None:
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    reader = SQLiteJournalReader(s.journal_dir)
    asyncio.run(journal.append(env(0)))  # a group before the upload
    staged = journal.stage()
    staged.add([env(1), env(2)])
    asyncio.run(journal.append(env(3)))  # a request answered while the upload streams
    staged.add([env(4)])
    assert [e.envelope for e in entries(reader.read({}, 100))] == [env(0), env(3)]
    assert reader.pending({}) == (2, env(0).received_ms)

    staged.publish()
    groups = reader.read({}, 100)
    assert [[e.received_ms for e in g.envelopes] for g in groups] == [
        [env(0).received_ms],
        [env(3).received_ms],
        [env(1).received_ms, env(2).received_ms],
        [env(4).received_ms],
    ]
    assert [g.seq for g in groups] == [1, 2, 3, 4]  # one row per part, consecutive
    assert reader.pending({}) == (5, env(0).received_ms)

    # Releasing a part's row deletes the part too.
    reader.release({journal.shard: 3})
    assert parts_left(s, journal.shard) == 1
    assert [g.seq for g in reader.read({journal.shard: 3}, 100)] == [4]
    reader.release({journal.shard: 4})
    assert parts_left(s, journal.shard) == 0
    journal.close()
    reader.close()


def test_a_discarded_or_abandoned_upload_leaves_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    refused = journal.stage()
    refused.add([env(1)])
    refused.discard()
    refused.discard()
    assert parts_left(s, journal.shard) == 0

    # The worker dies mid-upload: the next one to claim the shard deletes the parts.
    abandoned = journal.stage()
    abandoned.add([env(2)])
    published = journal.stage()
    published.add([env(3)])
    published.publish()
    journal.close()
    assert parts_left(s, journal.shard) == 2
    again = SQLiteJournal(s)
    assert again.shard == journal.shard
    assert parts_left(s, again.shard) == 1
    reader = SQLiteJournalReader(s.journal_dir)
    assert [e.envelope for e in entries(reader.read({}, 100))] == [env(3)]
    again.close()
    reader.close()


def test_an_upload_whose_parts_went_is_not_published_in_part(tmp_path: Path) -> None:
    """The worker shut down mid-upload and the next one claimed the shard (deleting
    the parts nobody had published) before the upload's thread got to publish."""
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    # As the thread sees it before the worker's journal says it is closed.
    staged = SQLiteStaging(shard_path(s.journal_dir, journal.shard), lambda: None)
    staged.add([env(1)])
    staged.add([env(2)])
    journal.close()
    SQLiteJournal(s).close()
    with pytest.raises(JournalUnavailable, match="parts are gone"):
        staged.publish()
    staged.discard()
    reader = SQLiteJournalReader(s.journal_dir)
    assert reader.read({}, 100) == []
    reader.close()


def test_staging_refuses_while_the_journal_does(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path), journal_min_free_bytes=2**62)
    journal = SQLiteJournal(s)
    staged = journal.stage()
    with pytest.raises(JournalUnavailable, match="disk_full"):
        staged.add([env(1)])
    staged.discard()
    journal.close()


def test_reads_stop_at_the_byte_bound_with_at_least_one_group(tmp_path: Path) -> None:
    s = settings(tmp_path)
    journal = SQLiteJournal(s)
    for i in range(10):
        asyncio.run(journal.append(env(i, size=1000)))  # ~1 KB a group
    reader = SQLiteJournalReader(s.journal_dir)
    assert len(reader.read({}, 100)) == 10
    assert len(reader.read({}, 100, max_bytes=3000)) == 3  # stops once past the bound
    assert len(reader.read({}, 100, max_bytes=1)) == 1  # always makes progress
    assert len(reader.read({}, 2, max_bytes=10**9)) == 2  # the record bound still holds
    journal.close()
    reader.close()


def test_a_journal_made_before_parts_existed_is_read_and_extended(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.journal_dir.mkdir(parents=True)
    old = sqlite3.connect(shard_path(s.journal_dir, "shard-00"))
    old.execute(
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER "
        "NOT NULL, n INTEGER NOT NULL, envelopes BLOB NOT NULL)"
    )
    old.execute(
        "INSERT INTO journal (received_ms, n, envelopes) VALUES (?, 1, ?)",
        (env(1).received_ms, msgspec.msgpack.encode([env(1)])),
    )
    old.commit()
    old.close()
    reader = SQLiteJournalReader(s.journal_dir)
    journal = SQLiteJournal(s)
    staged = journal.stage()
    staged.add([env(2)])
    staged.publish()
    assert [e.envelope for e in entries(reader.read({}, 100))] == [env(1), env(2)]
    journal.close()
    reader.close()
