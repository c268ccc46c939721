"""The loader against a real DuckLake and control store, fed by an in-memory journal."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.imports import Imported, ImportLedger
from tdedge.control.imports import metadata as ledger_tables
from tdedge.control.keys import hash_key, key_id
from tdedge.control.store import ControlStore, sqlite_engine
from tdedge.errors import LakeError
from tdedge.journal.envelope import Envelope, JournalEntry, JournalGroup
from tdedge.journal.sqlite import SQLiteJournal, SQLiteJournalReader
from tdedge.lake import system
from tdedge.lake.lake import Lake
from tdedge.loader import runner
from tdedge.loader.heartbeat import read_heartbeat
from tdedge.loader.routing import Envelopes
from tdedge.loader.runner import Loader

NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)
LATER = NOW + 10  # every record has waited past loader_batch_max_wait_s


class MemoryReader:
    """A JournalReader over lists; ``group`` appends share one seq, as the SQLite journal's do."""

    def __init__(self) -> None:
        self.shards: dict[str, list[JournalEntry]] = {}
        self.released: list[dict[str, int]] = []
        self.fail_release = False

    def append(self, env: Envelope, shard: str = "s0", *, group: bool = False) -> JournalEntry:
        entries = self.shards.setdefault(shard, [])
        last = entries[-1].seq if entries else self._floor(shard)
        entry = JournalEntry(shard, last if group and entries else last + 1, env)
        entries.append(entry)
        return entry

    def _floor(self, shard: str) -> int:
        return max((r.get(shard, 0) for r in self.released), default=0)

    def read(
        self, after: Mapping[str, int], limit: int, max_bytes: int | None = None
    ) -> list[JournalGroup]:
        out: list[JournalGroup] = []
        for shard, entries in sorted(self.shards.items()):
            waiting = (e for e in entries if e.seq > after.get(shard, 0))
            taken = size = 0
            # Whole groups only: entries that share a seq are one group.
            for seq, alike in itertools.groupby(waiting, key=lambda e: e.seq):
                if taken >= limit or (max_bytes is not None and size >= max_bytes):
                    break
                envelopes = [e.envelope for e in alike]
                out.append(JournalGroup(shard, seq, envelopes))
                taken += len(envelopes)
                size += sum(len(e.record) for e in envelopes)
        return out

    def release(self, upto: Mapping[str, int]) -> None:
        if self.fail_release:
            raise RuntimeError("simulated crash after the lake commit")
        self.released.append(dict(upto))
        for shard, entries in self.shards.items():
            self.shards[shard] = [e for e in entries if e.seq > upto.get(shard, 0)]

    def pending(self, after: Mapping[str, int]) -> tuple[int, int | None]:
        waiting = [
            e for shard, es in self.shards.items() for e in es if e.seq > after.get(shard, 0)
        ]
        return len(waiting), min((e.envelope.received_ms for e in waiting), default=None)

    def close(self) -> None:
        pass


@dataclass
class World:
    settings: Settings
    store: ControlStore
    reader: MemoryReader
    lake: Lake
    master: str  # account 1
    writer: str  # account 1, write-only
    other: str  # account 2, master

    def loader(self, lake: Lake | None = None, now: float = NOW) -> Loader:
        directory = Directory(self.store, ttl_s=60)
        return Loader(self.settings, self.reader, directory, lake or self.lake, clock=lambda: now)

    def send(
        self,
        record: Any,
        *,
        key: str | None = None,
        database: str = "db",
        table: str = "t",
        shard: str = "s0",
        reject: str = "",
        raw: bytes | None = None,
        group: bool = False,
    ) -> JournalEntry:
        body = raw if raw is not None else msgspec.json.encode(record)
        env = Envelope(
            NOW_MS, "legacy", database, table, hash_key(key or self.master), body, reject
        )
        return self.reader.append(env, shard, group=group)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.lake.query(sql).rows


def make_world(tmp_path: Path, **overrides: Any) -> World:
    s = Settings(data_dir=str(tmp_path / "data"), **overrides)
    store = ControlStore.open(s.control_db)
    master = store.create_key(1, "master")
    writer = store.create_key(1, "write")
    other = store.create_key(2, "master")
    store.create_database("db", 1)
    return World(s, store, MemoryReader(), Lake.open(s), master, writer, other)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.lake.close()
    w.store.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def errors(w: World) -> list[dict[str, Any]]:
    result = w.lake.import_errors(100)
    found = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    return sorted(found, key=lambda e: e["journal_seq"])


def test_a_batch_lands_exactly_once(world: World) -> None:
    for i in range(5):
        world.send({"time": 1_700_000_000 + i, "i": i})
    loader = world.loader()
    report = loader.step(LATER)
    assert (report.entries, report.rows, report.rejected) == (5, 5, 0)
    assert world.rows("SELECT time, i FROM db.t ORDER BY i") == [
        (1_700_000_000 + i, i) for i in range(5)
    ]
    assert world.lake.positions() == {"s0": 5}
    assert world.reader.released == [{"s0": 5}]
    assert loader.step(LATER).entries == 0
    world.send({"i": 5})
    assert loader.step(LATER + 1).rows == 1
    assert world.rows("SELECT count(*), count(DISTINCT i) FROM db.t") == [(6, 6)]


class CrashingLake(Lake):
    """Fails inside the transaction after the rows went in, before the positions."""

    def _insert(self, ref: str, table: Any, budget: Any) -> None:
        if ref == system.POSITIONS:
            raise LakeError("simulated crash before commit")
        super()._insert(ref, table, budget)


def test_a_crash_before_the_commit_rereads_without_duplicates(world: World) -> None:
    for i in range(4):
        world.send({"i": i})
    crashing = CrashingLake.open(world.settings)
    with pytest.raises(LakeError):
        world.loader(crashing).step(LATER)
    crashing.close()
    assert world.lake.tables("db") == []
    assert world.lake.positions() == {}
    assert world.reader.released == []

    assert world.loader().step(LATER).rows == 4
    assert world.loader().step(LATER).rows == 0
    assert world.rows("SELECT count(*), count(DISTINCT i) FROM db.t") == [(4, 4)]


def test_a_crash_after_the_commit_does_not_load_twice(world: World) -> None:
    for i in range(3):
        world.send({"i": i})
    world.reader.fail_release = True
    with pytest.raises(RuntimeError):
        world.loader().step(LATER)
    # The journal still holds the entries, but the lake holds their positions.
    world.reader.fail_release = False
    assert world.reader.pending({})[0] == 3
    assert world.loader().step(LATER).rows == 0
    assert world.rows("SELECT count(*) FROM db.t") == [(3,)]


def test_a_killed_process_mid_commit_loses_and_duplicates_nothing(world: World) -> None:
    """A real process dies (os._exit) inside the lake transaction; a new one carries on."""
    script = textwrap.dedent(
        f"""
        import os
        from tdedge.config import Settings
        from tdedge.control.directory import Directory
        from tdedge.control.store import ControlStore
        from tdedge.lake import system
        from tdedge.lake.lake import Lake
        from tdedge.loader.runner import Loader
        from tests.unit.loader.test_loader import LATER, World, MemoryReader

        class DyingLake(Lake):
            def _insert(self, ref, table, budget):
                super()._insert(ref, table, budget)
                if ref == system.POSITIONS:
                    os._exit(9)  # rows and positions written, COMMIT never runs

        s = Settings.from_json({world.settings.to_json()!r})
        store = ControlStore.open(s.control_db)
        w = World(s, store, MemoryReader(), DyingLake.open(s), {world.master!r}, "", "")
        for i in range(500):  # more than the inlining limit: a Parquet file is written
            w.send({{"i": i}})
        Loader(s, w.reader, Directory(store, ttl_s=60), w.lake).step(LATER)
        """
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True)
    assert done.returncode == 9, done.stderr.decode()

    orphans = list(world.settings.lake_data_dir.rglob("*.parquet"))
    assert orphans  # written by the dead transaction, referenced by no commit

    for i in range(500):
        world.send({"i": i})
    lake = Lake.open(world.settings)  # a fresh process would open it like this
    assert lake.positions() == {}
    assert world.loader(lake).step(LATER).rows == 500
    assert world.loader(lake).step(LATER).rows == 0
    assert lake.query("SELECT count(*), count(DISTINCT i) FROM db.t").rows == [(500, 500)]
    # Compaction deletes the dead transaction's files once they are past the retention.
    # (Real time here: DuckLake compares the cut-off with the files' own timestamps.)
    lake.compact(time.time() + world.settings.lake_retention_s + 1)
    assert not any(f.exists() for f in orphans)
    assert lake.query("SELECT count(*) FROM db.t").rows == [(500,)]
    lake.close()


def test_rejections_carry_their_reason_code(world: World) -> None:
    revoked = world.store.create_key(1, "write")
    world.store.revoke_key(key_id(hash_key(revoked)))
    before = sample("tdedge_rejections_total", reason="foreign_key")

    world.send({"ok": 1})  # 1 loads
    world.send({"a": 1}, key="1/" + "0" * 40)  # 2 unknown_key
    world.send({"a": 1}, key=revoked)  # 3 revoked_key
    world.send({"a": 1}, key=world.other)  # 4 foreign_key (db belongs to account 1)
    world.send({"a": 1}, key=world.writer, database="nodb")  # 5 database_not_found
    world.send({"a": 1}, database="tdedge_system")  # 6 reserved_database
    world.send({"a": 1}, database="bad-name")  # 7 invalid_name
    world.send(None, raw=b"[1, 2]")  # 8 invalid_record: not an object
    world.send(None, raw=b'{"a": ')  # 9 invalid_record: not JSON
    world.send({"a": 1}, reject="sync_auth_failed")  # 10 the edge's verdict, verbatim
    report = world.loader().step(LATER)
    assert (report.rows, report.rejected) == (1, 9)

    found = errors(world)
    assert [(e["journal_seq"], e["reason"]) for e in found] == [
        (2, "unknown_key"),
        (3, "revoked_key"),
        (4, "foreign_key"),
        (5, "database_not_found"),
        (6, "reserved_database"),
        (7, "invalid_name"),
        (8, "invalid_record"),
        (9, "invalid_record"),
        (10, "sync_auth_failed"),
    ]
    unknown, revoked_row, foreign = found[0], found[1], found[2]
    assert unknown["account_id"] is None
    assert unknown["key_id"] == key_id(hash_key("1/" + "0" * 40))
    assert revoked_row["account_id"] == 1
    assert foreign["account_id"] == 2 and foreign["database_name"] == "db"
    assert json.loads(foreign["record"]) == {"a": 1}
    assert found[7]["record"] == '{"a": '
    assert all(e["time"] == int(LATER) and e["received_ms"] == NOW_MS for e in found)
    assert all(e["door"] == "legacy" and e["journal_shard"] == "s0" for e in found)
    # No secret is ever stored: only key ids derived from the hash.
    assert not any(revoked in str(e) or world.other in str(e) for e in found)
    assert sample("tdedge_rejections_total", reason="foreign_key") == before + 1
    assert world.lake.tables("db") == ["t"]


def test_a_master_key_creates_a_missing_database(world: World) -> None:
    world.send({"a": 1}, database="NewDB", table="Events")
    assert world.loader().step(LATER).rows == 1
    assert world.store.database_owners()["newdb"] == 1
    assert world.rows("SELECT a FROM newdb.events") == [(1,)]


def test_without_auto_create_a_master_key_needs_the_database(tmp_path: Path) -> None:
    w = make_world(tmp_path, auto_create_database_for_master=False)
    w.send({"a": 1}, database="newdb")
    assert w.loader().step(LATER).rejected == 1
    assert [e["reason"] for e in errors(w)] == ["database_not_found"]
    assert "newdb" not in w.store.database_owners()
    w.lake.close()
    w.store.close()


def test_a_record_of_two_values_is_refused_without_shifting_its_neighbours(
    world: World,
) -> None:
    """The loader decodes a table's records as one array: a record that is two objects
    would slip one place. It is refused alone; the others land with their own values."""
    world.send({"n": 1})
    world.send(None, raw=b'{"n": 2},{"n": 3}')
    world.send({"n": 4})
    report = world.loader().step(LATER)
    assert (report.rows, report.rejected) == (2, 1)
    assert world.rows("SELECT n FROM db.t ORDER BY n") == [(1,), (4,)]
    assert [(e["journal_seq"], e["reason"]) for e in errors(world)] == [(2, "invalid_record")]


def test_the_schema_evolves_across_batches(world: World) -> None:
    loader = world.loader()
    conflicts_before = sample("tdedge_type_conflicts_total")
    world.send({"n": 1, "flag": True})
    loader.step(LATER)
    world.send({"n": 2.5, "s": "x"})
    loader.step(LATER)
    world.send({"n": "many", "flag": 3, "S": "y"})
    report = loader.step(LATER)
    assert report.conflicts == 2
    assert world.lake.columns("db", "t") == {
        "time": "BIGINT",
        "n": "DOUBLE",
        "flag": "BOOLEAN",
        "s": "VARCHAR",
        "td_type_conflicts": "VARCHAR",
    }
    got = world.rows("SELECT n, flag, s, td_type_conflicts FROM db.t ORDER BY rowid")
    assert got == [
        (1.0, True, None, None),
        (2.5, None, "x", None),
        (None, None, "y", '{"n":"many","flag":3}'),
    ]
    assert sample("tdedge_type_conflicts_total") == conflicts_before + 2


def test_rows_keep_journal_order_across_keys(world: World) -> None:
    second = world.store.create_key(1, "write")
    world.send({"y": 1})
    world.send({"x": "s"}, key=second)  # the first x in the journal is a string
    world.send({"x": 5})
    world.loader().step(LATER)
    assert world.lake.columns("db", "t") == {"time": "BIGINT", "y": "BIGINT", "x": "VARCHAR"}
    assert sorted(world.rows("SELECT x FROM db.t WHERE x IS NOT NULL")) == [("5",), ("s",)]


def test_several_shards_and_shared_seqs_keep_their_own_positions(world: World) -> None:
    world.send({"i": 1}, shard="a")
    world.send({"i": 2}, shard="a", group=True)
    world.send({"i": 3}, shard="b")
    world.send({"i": 4}, shard="b")
    world.send({"i": 5}, shard="b", group=True)
    assert world.loader().step(LATER).rows == 5
    assert world.lake.positions() == {"a": 1, "b": 2}
    world.send({"i": 6}, shard="a")
    assert world.loader().step(LATER).rows == 1
    assert world.lake.positions() == {"a": 2, "b": 2}
    assert world.rows("SELECT count(DISTINCT i) FROM db.t") == [(6,)]


def test_a_young_partial_batch_waits_for_company(tmp_path: Path) -> None:
    w = make_world(tmp_path, loader_batch_max_records=10, loader_batch_max_wait_s=0.25)
    loader = w.loader()
    w.send({"i": 0})
    waiting = loader.step(NOW + 0.1)
    assert (waiting.entries, waiting.lag_records) == (0, 1)
    assert w.lake.tables("db") == []
    assert loader.step(NOW + 0.3).rows == 1
    # A full batch does not wait, and a step never takes more than the limit.
    for i in range(25):
        w.send({"i": i})
    first = loader.step(NOW)
    assert (first.rows, first.lag_records, first.more) == (10, 15, True)
    assert loader.step(NOW).rows == 10
    assert loader.step(NOW).rows == 0  # 5 left, young: wait
    assert loader.step(NOW + 1).rows == 5
    w.lake.close()
    w.store.close()


def test_metrics_count_rows_and_lag(world: World) -> None:
    rows_before = sample("tdedge_rows_written_total")
    batches_before = sample("tdedge_loader_batches_total")
    for i in range(3):
        world.send({"i": i})
    loader = world.loader()
    report = loader.step(NOW + 4)
    assert report.lag_seconds == pytest.approx(4.0)
    assert sample("tdedge_loader_lag_seconds") == pytest.approx(4.0)
    assert sample("tdedge_rows_written_total") == rows_before + 3
    assert sample("tdedge_loader_batches_total") == batches_before + 1
    loader.step(NOW + 5)
    assert sample("tdedge_loader_lag_records") == 0


def test_run_loads_beats_and_stops(tmp_path: Path) -> None:
    w = make_world(tmp_path, loader_poll_s=0.01, compaction_interval_s=0.05)
    for i in range(7):
        w.send({"i": i})
    stop = threading.Event()
    thread = threading.Thread(target=w.loader(now=LATER).run, args=(stop,))
    thread.start()
    # The loader thread owns w.lake; the test watches through its own connection.
    watcher = Lake.open(w.settings, read_only=True)
    try:
        for _ in range(500):
            if watcher.positions().get("s0") == 7 and w.settings.loader_heartbeat.exists():
                break
            stop.wait(0.02)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert watcher.query("SELECT count(*) FROM db.t").rows == [(7,)]
    watcher.close()
    beat = read_heartbeat(w.settings.loader_heartbeat)
    assert beat is not None and beat.time == LATER and beat.failures == 0
    raw = json.loads(w.settings.loader_heartbeat.read_text())
    assert {"time", "lag_records", "lag_seconds", "pid"} <= set(raw)
    w.lake.close()
    w.store.close()


def test_a_table_the_lake_keeps_refusing_is_set_aside(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "SET_ASIDE_AFTER_FAILURES", 2)
    # A table made by hand with a constraint tdedge's rows cannot meet.
    world.lake.ensure_schema("db")
    world.lake._con.execute("CREATE TABLE lake.db.strict (time BIGINT, must VARCHAR NOT NULL)")
    world.lake.reload()
    world.send({"a": 1}, table="strict")
    world.send({"i": 1})
    loader = world.loader()
    for _ in range(2):
        with pytest.raises(LakeError):
            loader.step(LATER)
    assert world.lake.positions() == {}
    report = loader.step(LATER)
    assert (report.rows, report.rejected) == (1, 1)
    assert world.rows("SELECT i FROM db.t") == [(1,)]
    (error,) = errors(world)
    assert error["reason"] == "load_failed" and error["table_name"] == "strict"
    assert "NOT NULL" in error["detail"] and json.loads(error["record"]) == {"a": 1}
    assert world.lake.positions() == {"s0": 2}
    # Later records for the table are tried normally again.
    world.send({"a": 2, "must": "x"}, table="strict")
    assert loader.step(LATER).rows == 1


def test_envelopes_flatten_groups_and_find_each_ones_place() -> None:
    def env(i: int) -> Envelope:
        return Envelope(NOW_MS + i, "legacy", "db", "t", b"k", b"{}")

    groups = [
        JournalGroup("s0", 4, [env(0), env(1)]),
        JournalGroup("s0", 5, [env(2)]),
        JournalGroup("s1", 4, [env(3), env(4), env(5)]),
    ]
    flat = Envelopes.of(groups)
    assert [e.received_ms - NOW_MS for e in flat.items] == [0, 1, 2, 3, 4, 5]
    assert [(flat.group(i).shard, flat.group(i).seq) for i in range(6)] == [
        ("s0", 4),
        ("s0", 4),
        ("s0", 5),
        ("s1", 4),
        ("s1", 4),
        ("s1", 4),
    ]


def chunk(w: World, unique_id: str, n: int, *, table: str = "t") -> list[Envelope]:
    """The envelopes the edge journals for one ``import_with_id`` upload."""
    key_hash = hash_key(w.master)
    return [
        Envelope(
            NOW_MS,
            "import",
            "db",
            table,
            key_hash,
            msgspec.json.encode({"i": i}),
            import_id=unique_id,
            import_index=i,
        )
        for i in range(n)
    ]


def test_a_bulk_import_journaled_twice_loads_once(world: World) -> None:
    """The edge died between journaling a chunk and recording its unique_id, so the
    retry journaled it again; and two uploads of one id raced in one journal group."""
    journal = SQLiteJournal(world.settings)

    async def append(*uploads: list[Envelope]) -> None:
        await asyncio.gather(*(journal.append_many(envs) for envs in uploads))

    asyncio.run(append(chunk(world, "u-1", 3)))  # seq 1
    asyncio.run(append(chunk(world, "u-1", 3)))  # seq 2: the retry
    asyncio.run(append(chunk(world, "u-1", 2, table="other")))  # another table's id
    asyncio.run(append(chunk(world, "u-2", 2), chunk(world, "u-2", 2)))  # one group
    reader = SQLiteJournalReader(world.settings.journal_dir)
    assert [len(g.envelopes) for g in reader.read({}, 100)] == [3, 3, 2, 4]
    directory = Directory(world.store, ttl_s=60)

    def loader(lake: Lake) -> Loader:
        return Loader(world.settings, reader, directory, lake, clock=lambda: NOW)

    # A crash inside the transaction leaves neither the rows nor the ids.
    crashing = CrashingLake.open(world.settings)
    with pytest.raises(LakeError):
        loader(crashing).step(LATER)
    crashing.close()
    assert world.rows(f"SELECT count(*) FROM {system.BULK_IMPORTS}") == [(0,)]

    duplicates_before = sample("tdedge_import_duplicates_total")
    report = loader(world.lake).step(LATER)
    assert (report.entries, report.rows, report.duplicates) == (12, 7, 5)
    assert report.lag_records == 0
    assert world.rows("SELECT i, count(*) FROM db.t GROUP BY i ORDER BY i") == [
        (0, 2),  # u-1 and u-2
        (1, 2),
        (2, 1),
    ]
    assert world.rows("SELECT count(*) FROM db.other") == [(2,)]
    assert sample("tdedge_import_duplicates_total") == duplicates_before + 5
    # Each dropped upload says so once, in the import errors.
    assert world.rows(
        f"SELECT reason, account_id, journal_seq FROM {system.IMPORT_ERRORS} ORDER BY 3"
    ) == [("duplicate_upload", 1, 2), ("duplicate_upload", 1, 4)]
    assert world.lake.positions() == {"shard-00": 4}
    assert world.rows(
        "SELECT database_name, table_name, unique_id, records, journal_shard, journal_seq "
        f"FROM {system.BULK_IMPORTS} ORDER BY journal_seq"
    ) == [
        ("db", "t", "u-1", 3, "shard-00", 1),
        ("db", "other", "u-1", 2, "shard-00", 3),
        ("db", "t", "u-2", 2, "shard-00", 4),
    ]

    # Compaction keeps the ids; a later batch's copy is dropped through them.
    world.lake.compact(LATER)
    asyncio.run(append(chunk(world, "u-1", 3), chunk(world, "u-3", 1)))
    report = loader(world.lake).step(LATER + 1)
    assert (report.entries, report.rows, report.duplicates) == (4, 1, 3)
    assert world.rows("SELECT count(*) FROM db.t") == [(6,)]
    assert sample("tdedge_import_duplicates_total") == duplicates_before + 8
    assert world.lake.positions() == {"shard-00": 5}
    assert world.rows(f"SELECT count(*) FROM {system.BULK_IMPORTS}") == [(4,)]

    # Past their retention the ids are forgotten, the lake's and the edge's ledger's
    # alike (a retry that late loads again).
    ledger = ImportLedger(sqlite_engine(world.settings.control_db))
    for unique_id, at in (("u-1", LATER - 1), ("u-3", LATER + 1)):
        ledger.record(1, "db", "t", unique_id, Imported("0" * 32, 1), at)
    compacting = Loader(world.settings, reader, directory, world.lake, ledger=ledger)
    retention = world.settings.bulk_import_retention_s
    compacting.compact(LATER + retention + 1)  # the first batch's ids, not the second's
    assert world.rows(f"SELECT unique_id FROM {system.BULK_IMPORTS}") == [("u-3",)]
    assert ledger.find(1, "db", "t", "u-1") is None
    assert ledger.find(1, "db", "t", "u-3") == Imported("0" * 32, 1)
    journal.close()
    reader.close()


def test_a_ledger_made_before_its_index_gets_it(tmp_path: Path) -> None:
    """Forgetting deletes by age: a control store from before the index has it after."""
    engine = sqlite_engine(tmp_path / "control.sqlite")
    with engine.begin() as conn:  # the table as it was made before, without the index
        conn.execute(sa.schema.CreateTable(ledger_tables.tables["bulk_imports"]))

    def indexes() -> list[str]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
            return [r[0] for r in rows]

    assert indexes() == []
    ImportLedger(engine)  # the control schema's upgrade, the rest of its tables with it
    assert "bulk_imports_created_at" in indexes()
    engine.dispose()


def test_a_batch_is_bounded_by_bytes_as_well_as_records(tmp_path: Path) -> None:
    """Records of up to 1 MiB each: 100,000 of them would be 100 GB in one batch."""
    w = make_world(tmp_path, loader_batch_max_bytes=250 * 1024)
    journal = SQLiteJournal(w.settings)
    record = msgspec.json.encode({"pad": "x" * 100 * 1024})
    for _ in range(7):  # one ~100 KiB group each
        env = Envelope(NOW_MS, "legacy", "db", "t", hash_key(w.master), record)
        asyncio.run(journal.append(env))
    reader = SQLiteJournalReader(w.settings.journal_dir)
    directory = Directory(w.store, ttl_s=60)
    loader = Loader(w.settings, reader, directory, w.lake, clock=lambda: NOW)
    # Each batch ends with the group that passes the bound: 3, 3, then what is left.
    assert [loader.step(LATER).rows for _ in range(4)] == [3, 3, 1, 0]
    journal.close()
    reader.close()
    w.lake.close()
    w.store.close()


def test_records_of_keys_that_may_not_write_are_kept_cut(world: World) -> None:
    # The edge took them before checking the key: their import errors must not grow
    # with what anybody sends, while an authorised key's refused record is kept whole.
    big = {"pad": "x" * 100_000}
    world.send(big, key="1/" + "0" * 40)  # unknown_key
    world.send(big, key=world.writer, database="nodb")  # database_not_found
    assert world.loader().step(LATER).rejected == 2
    unknown, missing = errors(world)
    keep = world.settings.refused_key_keep_bytes
    assert len(unknown["record"]) == keep and "cut to its first" in unknown["detail"]
    assert json.loads(missing["record"]) == big
