"""What every journal must do, whatever it is built on.

One parametrized fixture names the backends; each test runs on every one of them
through the Protocols (``Journal``, ``JournalReader``) that ``tdedge.backends`` hands
out. A new backend joins by adding its parameter (and the settings that choose it).
The embedded SQLite journal's own behaviour (shards per process, free disk, fsync
order) is tested in tests/unit/journal/test_journal.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from tdedge import backends
from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal.base import Journal, JournalReader
from tdedge.journal.envelope import Envelope, entries
from tests import nats_server


def env(i: int, size: int = 8) -> Envelope:
    return Envelope(1_700_000_000_000 + i, "legacy", "db", "t", b"h" * 32, b"x" * size)


class Backend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._opened: list[Journal | JournalReader] = []

    def journal(self, **changes: object) -> Journal:
        j = backends.journal(msgspec.structs.replace(self.settings, **changes))
        self._opened.append(j)
        return j

    def reader(self) -> JournalReader:
        r = backends.journal_reader(self.settings)
        self._opened.append(r)
        return r

    def close(self) -> None:
        for opened in reversed(self._opened):
            opened.close()


def _settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=str(tmp_path))
    if request.param == "jetstream":
        cluster: nats_server.Cluster = request.getfixturevalue("nats_cluster")
        # A new stream's first publishes wait for its leader's election, which on a
        # loaded machine can outlast the 1 s after which a group goes to the local
        # outbox; that fallback has tests of its own (tests/unit/journal).
        return Settings(
            data_dir=str(tmp_path),
            journal=cluster.url,
            journal_stream=cluster.new_stream(),
            journal_publish_timeout_s=15.0,
        )
    raise AssertionError(request.param)


@pytest.fixture(params=["sqlite", "jetstream"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(_settings(request, tmp_path))
    yield b
    b.close()


def together(journal: Journal, envs: Sequence[Envelope]) -> None:
    """Append each of ``envs`` at the same time, as concurrent requests do."""

    async def go() -> None:
        await asyncio.gather(*(journal.append(e) for e in envs))

    asyncio.run(go())


def append_many(journal: Journal, envs: Sequence[Envelope]) -> None:
    asyncio.run(journal.append_many(envs))


def append_each(journal: Journal, envs: Sequence[Envelope]) -> None:
    """One append after another: one group each."""
    for e in envs:
        asyncio.run(journal.append(e))


def test_what_was_appended_is_read_back_in_order(backend: Backend) -> None:
    journal = backend.journal()
    envs = [env(i) for i in range(500)]
    together(journal, envs)
    got = entries(backend.reader().read({}, 10_000))
    assert [e.envelope for e in got] == envs


def test_appends_are_durable_once_they_return(backend: Backend) -> None:
    journal = backend.journal()
    append_each(journal, [env(1), env(2)])
    journal.close()
    got = entries(backend.reader().read({}, 100))
    assert [e.envelope for e in got] == [env(1), env(2)]


def test_append_many_is_one_group(backend: Backend) -> None:
    journal = backend.journal()
    append_many(journal, [env(1), env(2), env(3)])
    groups = backend.reader().read({}, 100)
    assert [list(g.envelopes) for g in groups] == [[env(1), env(2), env(3)]]


def test_read_continues_after_a_position_and_release_forgets(backend: Backend) -> None:
    journal = backend.journal()
    append_each(journal, [env(i) for i in range(10)])
    reader = backend.reader()
    first = reader.read({}, 4)
    assert [e.envelope for e in entries(first)] == [env(i) for i in range(4)]
    position = {first[-1].shard: first[-1].seq}
    rest = reader.read(position, 100)
    assert [e.envelope for e in entries(rest)] == [env(i) for i in range(4, 10)]
    assert reader.pending(position) == (6, env(4).received_ms)

    end = {rest[-1].shard: rest[-1].seq}
    reader.release(end)
    assert reader.read({}, 100) == []
    assert reader.pending(end) == (0, None)
    # Positions only grow, even once everything was released.
    append_each(journal, [env(99)])
    after = reader.read(end, 100)
    assert [e.envelope for e in entries(after)] == [env(99)]
    assert after[0].seq > end[after[0].shard]


def test_asking_what_is_pending_takes_nothing_from_the_next_read(backend: Backend) -> None:
    journal = backend.journal()
    append_each(journal, [env(i) for i in range(5)])
    reader = backend.reader()
    assert reader.pending({}) == (5, env(0).received_ms)
    assert reader.pending({}) == (5, env(0).received_ms)  # asked again while a batch gathers
    first = reader.read({}, 2)
    assert [e.envelope for e in entries(first)] == [env(0), env(1)]
    position = {first[-1].shard: first[-1].seq}
    assert reader.pending(position) == (3, env(2).received_ms)
    assert [e.envelope for e in entries(reader.read(position, 100))] == [env(2), env(3), env(4)]


def test_a_read_returns_whole_groups_and_at_least_one(backend: Backend) -> None:
    journal = backend.journal()
    append_many(journal, [env(i, size=1000) for i in range(5)])
    append_many(journal, [env(i, size=1000) for i in range(5, 10)])
    reader = backend.reader()
    # Fewer envelopes and bytes asked for than the first group holds: still that group.
    one = reader.read({}, 1, max_bytes=10)
    assert [len(g.envelopes) for g in one] == [5]
    both = reader.read({}, 100)
    assert [len(g.envelopes) for g in both] == [5, 5]


def test_staged_parts_are_invisible_until_published(backend: Backend) -> None:
    journal = backend.journal()
    reader = backend.reader()
    staging = journal.stage()
    staging.add([env(1), env(2)])
    staging.add([env(3)])
    assert staging.records == 3
    assert reader.read({}, 100) == []
    staging.publish()
    got = entries(reader.read({}, 100))
    assert [e.envelope for e in got] == [env(1), env(2), env(3)]


def test_discarded_parts_are_never_read(backend: Backend) -> None:
    journal = backend.journal()
    staging = journal.stage()
    staging.add([env(1)])
    staging.discard()
    append_each(journal, [env(2)])
    got = entries(backend.reader().read({}, 100))
    assert [e.envelope for e in got] == [env(2)]


def test_backlog_counts_what_is_not_released_and_bounds_appends(backend: Backend) -> None:
    journal = backend.journal(journal_max_backlog=3)
    append_each(journal, [env(i) for i in range(3)])
    assert journal.backlog() == 3
    # The bound is noticed soon (a journal may check it in the background), never never.
    eventually(lambda: not journal.writable())
    with pytest.raises(JournalUnavailable, match="backlog_full"):
        append_each(journal, [env(3)])
    reader = backend.reader()
    groups = reader.read({}, 100)
    reader.release({g.shard: g.seq for g in groups})
    assert reader.read({}, 100) == []
    eventually(journal.writable)
    append_each(journal, [env(4)])


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_closing_twice_is_harmless(backend: Backend) -> None:
    journal = backend.journal()
    append_each(journal, [env(1)])
    journal.close()
    journal.close()
    reader = backend.reader()
    reader.close()
    reader.close()
