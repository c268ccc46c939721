"""tdedge's own id of each SDK record (_tdedge_id), the clients' td_uuid, and the upgrade
of lakes that kept tdedge's id in td_uuid, against a real DuckLake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from tdedge.control.keys import hash_key
from tdedge.journal.envelope import Envelope
from tdedge.lake import system
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.lake import Lake
from tdedge.lake.sql import ident
from tests.unit.loader.test_loader import LATER, NOW, NOW_MS, World, errors, make_world

OURS = [f"0190a1b2-c3d4-7e5f-8a9b-{i:012x}" for i in range(300)]  # tdedge's ids (v7)
THEIRS = "5a3c1f0e-2b4d-4e6f-9a8b-7c6d5e4f3a2b"  # a device id, as the SDKs make them


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.lake.close()
    w.store.close()


def send(w: World, record: Any, *, door: str = "ingest", table: str = "t", **kw: Any) -> None:
    body = msgspec.json.encode(record)
    env = Envelope(NOW_MS, door, "db", table, hash_key(w.master), body, **kw)
    w.reader.append(env)


def columns(w: World, table: str) -> dict[str, str]:
    found = w.lake.columns("db", table)
    assert found is not None
    return found


def test_sdk_records_get_tdedge_id_and_keep_their_own_td_uuid(world: World) -> None:
    send(world, {"n": 1, "td_uuid": THEIRS}, record_id=OURS[0])
    send(world, {"n": 2}, record_id=OURS[1])
    send(world, {"n": 3}, door="legacy")  # other doors' records have no id
    assert world.loader().step(LATER).rows == 3
    assert world.rows("SELECT n, td_uuid, _tdedge_id FROM db.t ORDER BY n") == [
        (1, THEIRS, OURS[0]),
        (2, None, OURS[1]),
        (3, None, None),
    ]
    assert columns(world, "t")["_tdedge_id"] == "VARCHAR"


def test_no_client_writes_a_tdedge_column(world: World) -> None:
    # The ingest door refuses such keys; any other door's go to td_type_conflicts.
    send(world, {"n": 1, "_tdedge_id": "forged", "_TDEDGE_other": 2}, door="legacy")
    send(world, {"n": 2, "_tdedge_id": "forged"}, record_id=OURS[0])
    world.loader().step(LATER)
    rows = world.rows("SELECT n, _tdedge_id, td_type_conflicts FROM db.t ORDER BY n")
    assert [(n, i) for n, i, _ in rows] == [(1, None), (2, OURS[0])]
    assert msgspec.json.decode(rows[0][2]) == {"_tdedge_id": "forged", "_TDEDGE_other": 2}
    assert msgspec.json.decode(rows[1][2]) == {"_tdedge_id": "forged"}
    assert "_tdedge_other" not in columns(world, "t")


def test_tdedge_id_counts_against_the_column_limit(tmp_path: Path) -> None:
    w = make_world(tmp_path, max_table_columns=3)  # time, a, and one more
    try:
        send(w, {"a": 1}, door="legacy", table="plain")
        send(w, {"a": 1, "b": 2}, door="legacy", table="plain")
        send(w, {"a": 1}, record_id=OURS[0], table="sdk")
        send(w, {"a": 1, "b": 2}, record_id=OURS[1], table="sdk")
        report = w.loader().step(LATER)
        assert (report.rows, report.rejected) == (3, 1)
        assert sorted(columns(w, "sdk")) == ["_tdedge_id", "a", "time"]
        assert [e["reason"] for e in errors(w)] == ["too_many_columns"]
    finally:
        w.lake.close()
        w.store.close()


def test_entries_journaled_before_the_upgrade_load_their_id_as_tdedge_id(world: World) -> None:
    # The ingest door used to put tdedge's id in the record as td_uuid.
    send(world, {"n": 1, "td_uuid": OURS[0]})
    send(world, {"n": 2, "td_uuid": OURS[1]}, door="legacy")  # a client's, stays
    send(world, {"n": 3, "td_uuid": THEIRS}, record_id=OURS[2])
    world.loader().step(LATER)
    assert world.rows("SELECT n, td_uuid, _tdedge_id FROM db.t ORDER BY n") == [
        (1, None, OURS[0]),
        (2, OURS[1], None),
        (3, THEIRS, OURS[2]),
    ]


def old_lake(w: World, tables: dict[str, list[Any]]) -> None:
    """A lake as an older tdedge left it: each table's td_uuid holds ``tables[name]``
    (in two commits: the last two rows inlined in the catalog, the others in a Parquet
    file when there are more than the inlining limit), and no upgrades table."""
    for name, values in tables.items():
        cut = len(values) - 2
        for part in (values[:cut], values[cut:]):
            rows = pa.table(
                {
                    "time": pa.array([1_700_000_000] * len(part), pa.int64()),
                    "td_uuid": pa.array(part, pa.string()),
                    "n": pa.array(range(len(part)), pa.int64()),
                }
            )
            w.lake.commit(Batch([TableRows("db", name, rows)]))
    w.lake.query(f"DROP TABLE {system.UPGRADES}")
    w.lake.close()


def test_old_lakes_are_upgraded_once_and_keep_their_history(world: World) -> None:
    old_lake(
        world,
        {
            "ingest_only": OURS[:150],
            "mixed": [*OURS[100:210], THEIRS, None, OURS[1], THEIRS],
            "clients": [THEIRS, "not-a-uuid", None],
            "empty_ids": [None, None],
        },
    )
    world.lake = lake = Lake.open(world.settings)  # the new version starts
    assert any(world.settings.lake_data_dir.rglob("*.parquet"))
    send(world, {"n": 1000, "td_uuid": THEIRS}, record_id=OURS[299], table="ingest_only")
    world.loader().step(LATER)

    # Renamed in place (nothing rewritten); td_uuid came back with the new row's.
    assert list(columns(world, "ingest_only")) == ["time", "_tdedge_id", "n", "td_uuid"]
    assert world.rows(
        "SELECT count(*), count(DISTINCT _tdedge_id), min(_tdedge_id), count(td_uuid) "
        "FROM db.ingest_only WHERE n < 1000"
    ) == [(150, 150, OURS[0], 0)]
    # New rows: the client's td_uuid in a column of its own again.
    assert world.rows("SELECT td_uuid, _tdedge_id FROM db.ingest_only WHERE n = 1000") == [
        (THEIRS, OURS[299])
    ]
    # Some of each: tdedge's ids moved, the clients' stayed.
    ours = sorted([*OURS[100:210], OURS[1]])
    assert world.rows(
        "SELECT _tdedge_id FROM db.mixed WHERE _tdedge_id IS NOT NULL ORDER BY 1"
    ) == [(i,) for i in ours]
    assert world.rows("SELECT td_uuid, count(*) FROM db.mixed GROUP BY 1 ORDER BY 1") == [
        (THEIRS, 2),
        (None, 112),
    ]
    assert world.rows(
        "SELECT count(*) FROM db.mixed WHERE td_uuid IS NULL AND _tdedge_id IS NULL"
    ) == [(1,)]
    assert "_tdedge_id" not in columns(world, "clients")
    assert "_tdedge_id" not in columns(world, "empty_ids")
    assert world.rows(f"SELECT name FROM {system.UPGRADES}") == [("record_ids",)]

    # Once only: a client's td_uuid that looks like tdedge's stays at the next start.
    send(world, {"n": 7, "td_uuid": OURS[2]}, record_id=OURS[3], table="clients")
    world.loader().step(LATER + 1)
    lake.close()
    world.lake = Lake.open(world.settings)
    world.loader().step(LATER + 2)
    assert world.rows("SELECT td_uuid, _tdedge_id FROM db.clients WHERE n = 7") == [
        (OURS[2], OURS[3])
    ]
    assert world.rows(f"SELECT count(*) FROM {system.UPGRADES}") == [(1,)]


def test_a_fresh_lake_records_the_upgrade_with_nothing_to_change(world: World) -> None:
    world.loader().step(LATER)
    assert world.rows(f"SELECT name, time FROM {system.UPGRADES}") == [("record_ids", int(NOW))]


def test_tables_with_both_columns_are_left_alone(world: World) -> None:
    rows = pa.table({"td_uuid": [OURS[0]], "_tdedge_id": ["a client's"]})
    world.lake.commit(Batch([TableRows("db", "both", rows)]))
    world.lake.query(f"DELETE FROM {system.UPGRADES}")
    world.loader().step(LATER)
    ref = f"db.{ident('both')}"
    assert world.rows(f"SELECT td_uuid, _tdedge_id FROM {ref}") == [(OURS[0], "a client's")]
