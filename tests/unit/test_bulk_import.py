"""Bulk uploads inside: the loader's unique_ids per account and upload."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.imports import ImportLedger
from tdedge.control.keys import hash_key, key_id
from tdedge.control.store import ControlStore, sqlite_engine
from tdedge.journal.envelope import Envelope
from tdedge.journal.sqlite import SQLiteJournal, SQLiteJournalReader
from tdedge.lake import system
from tdedge.lake.connection import open_connection
from tdedge.lake.lake import Lake
from tdedge.loader import imports
from tdedge.loader.runner import Loader

NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)


# Loading.


class World:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.settings = Settings(data_dir=str(tmp_path / "data"), **overrides)
        self.store = ControlStore.open(self.settings.control_db)
        self.master = self.store.create_key(1, "master")
        self.revoked = self.store.create_key(1, "write")
        self.other = self.store.create_key(2, "master")
        self.store.create_database("db", 1)
        self.store.create_database("elsewhere", 2)
        self.lake = Lake.open(self.settings)
        self.journal = SQLiteJournal(self.settings)
        self.reader = SQLiteJournalReader(self.settings.journal_dir)
        self.ledger = ImportLedger(sqlite_engine(self.settings.control_db))

    def upload(
        self, unique_id: str, n: int, *, key: str = "", db: str = "db", attempt: str = "a"
    ) -> list[Envelope]:
        return [
            Envelope(
                NOW_MS,
                "import",
                db,
                "t",
                hash_key(key or self.master),
                msgspec.json.encode({"i": i}),
                import_id=unique_id,
                import_index=i,
                import_attempt=attempt,
            )
            for i in range(n)
        ]

    def append(self, envs: list[Envelope]) -> None:
        asyncio.run(self.journal.append_many(envs))

    def stage(self, *part_list: list[Envelope]) -> None:
        staged = self.journal.stage()
        for part in part_list:
            staged.add(part)
        staged.publish()

    def loader(self, **overrides: Any) -> Loader:
        directory = Directory(self.store, ttl_s=60)
        settings = msgspec.structs.replace(self.settings, **overrides)
        return Loader(settings, self.reader, directory, self.lake, ledger=self.ledger)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.lake.query(sql).rows

    def errors(self) -> list[tuple[Any, ...]]:
        return self.rows(
            f"SELECT reason, account_id, table_name FROM {system.IMPORT_ERRORS} "
            "ORDER BY journal_seq, reason"
        )

    def close(self) -> None:
        self.journal.close()
        self.reader.close()
        self.lake.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    w.close()


def test_a_large_upload_loads_part_by_part_and_its_repeat_is_dropped(world: World) -> None:
    first = world.upload("u", 6, attempt="first")
    repeat = world.upload("u", 6, attempt="repeat")
    world.stage(first[:2], first[2:4], first[4:])
    world.stage(repeat[:3], repeat[3:])
    loader = world.loader(loader_batch_max_records=4)
    # Two parts a batch: the upload's later parts come in later batches and still load.
    reports = [loader.step(NOW + 10) for _ in range(4)]
    assert [r.rows for r in reports] == [4, 2, 0, 0]
    assert [r.duplicates for r in reports] == [0, 3, 3, 0]
    assert world.rows("SELECT count(*), count(DISTINCT i) FROM db.t") == [(6, 6)]
    assert world.rows(
        f"SELECT account_id, unique_id, attempt, records FROM {system.BULK_IMPORTS} "
        "ORDER BY journal_seq"
    ) == [(1, "u", "first", 2), (1, "u", "first", 2), (1, "u", "first", 2)]
    # One row per dropped group of the repeat, none for the parts loaded.
    assert world.errors() == [(imports.DUPLICATE_UPLOAD, 1, "t")] * 2
    assert world.ledger.find(1, "db", "t", "u") is not None


def test_a_chunk_refused_whole_is_not_recorded_and_accounts_never_collide(
    world: World,
) -> None:
    world.store.revoke_key(key_id(hash_key(world.revoked)))
    world.append(world.upload("u", 2, key=world.revoked, attempt="bad"))
    world.append(world.upload("u", 2, attempt="good"))
    # Account 2 writing account 1's database is refused whole; in its own, it loads.
    world.append(world.upload("u", 2, key=world.other, attempt="foreign"))
    world.append(world.upload("u", 1, key=world.other, db="elsewhere", attempt="own"))
    report = world.loader().step(NOW + 10)
    assert (report.rows, report.rejected, report.duplicates) == (3, 4, 0)
    assert world.rows("SELECT count(*) FROM db.t") == [(2,)]
    assert world.rows("SELECT count(*) FROM elsewhere.t") == [(1,)]
    reasons = sorted({r[:2] for r in world.errors()})
    assert reasons == [("foreign_key", 2), ("revoked_key", 1)]
    assert world.rows(
        f"SELECT account_id, database_name, attempt FROM {system.BULK_IMPORTS} ORDER BY 1"
    ) == [(1, "db", "good"), (2, "elsewhere", "own")]
    assert world.ledger.find(1, "db", "t", "u") is not None
    assert world.ledger.find(2, "db", "t", "u") is None


def test_ids_from_before_accounts_still_drop_their_repeats(tmp_path: Path) -> None:
    """A lake whose bulk_imports predates account_id and attempt gets them, NULL in the
    old rows, which still count as loaded for the key's database, table and id."""
    w = World(tmp_path)
    w.lake.close()
    con = open_connection(w.settings, read_only=False)
    con.execute(f"DROP TABLE {system.BULK_IMPORTS}")
    con.execute(
        f"CREATE TABLE {system.BULK_IMPORTS} (database_name VARCHAR, table_name VARCHAR, "
        "unique_id VARCHAR, records BIGINT, journal_shard VARCHAR, journal_seq BIGINT, "
        "time BIGINT)"
    )
    con.execute(f"INSERT INTO {system.BULK_IMPORTS} VALUES ('db', 't', 'old', 2, 's', 1, 1)")
    con.close()
    w.lake = Lake.open(w.settings)
    w.append(w.upload("old", 2, attempt=""))
    w.append(w.upload("new", 1))
    report = w.loader().step(NOW + 10)
    assert (report.rows, report.duplicates) == (1, 2)
    assert w.rows(f"SELECT unique_id, account_id FROM {system.BULK_IMPORTS} ORDER BY 1") == [
        ("new", 1),
        ("old", None),
    ]
    w.close()
