"""Two loaders, each with its own data dir and journal, hammering one shared lake (a
PostgreSQL catalog, files on S3), with failures injected around their commits: every
record lands exactly once.

DuckLake commits on one catalog conflict even on different tables (each takes the next
snapshot id), and its own retries can run out; a loader whose commit fails retries the
whole transaction (rows, import errors and journal positions together).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.errors import LakeError
from tdedge.journal.envelope import Envelope
from tdedge.lake.batch import Batch
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader
from tests.unit.contracts.conftest import SharedLake
from tests.unit.loader.test_loader import MemoryReader

RECORDS_PER_NODE = 240
NOW = 1_750_000_000.0
DEADLINE_S = 300.0


class FlakyLake(Lake):
    """A lake whose commits fail now and then: before anything is written, after the
    COMMIT went through (the answer lost), and once out to the loader itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.injected: list[str] = []

    def _commit_once(self, batch: Batch) -> None:
        self.calls += 1
        if self.calls == 2:
            self.injected.append("before")
            raise LakeError("injected: the catalog connection dropped before COMMIT")
        super()._commit_once(batch)
        if self.calls == 4:
            self.injected.append("after")
            raise LakeError("injected: the catalog connection dropped after COMMIT")

    def commit(self, batch: Batch) -> None:
        super().commit(batch)
        if self.calls in (6, 7) and "loader" not in self.injected:
            self.injected.append("loader")
            raise LakeError("injected: the commit's answer never reached the loader")


def _node(root: Path, name: str, catalog: str, data: str) -> Settings:
    return Settings(
        data_dir=str(root / name),
        lake_catalog=catalog,
        lake_data=data,
        loader_batch_max_records=20,
        loader_batch_max_wait_s=0.0,
    )


def test_two_loaders_on_one_lake_load_every_record_once(
    tmp_path: Path, shared_lake: SharedLake
) -> None:
    catalog, data = shared_lake
    control = ControlStore.open(tmp_path / "control.sqlite")
    key = control.create_key(1, "master")
    control.create_database("db", 1)
    nodes = [_node(tmp_path, name, catalog, data) for name in ("a", "b")]
    readers = [MemoryReader(), MemoryReader()]
    for n, reader in enumerate(readers):
        for i in range(RECORDS_PER_NODE):
            # Each node writes a table of its own and one both write.
            table = "both" if i % 2 else f"only_{n}"
            record = msgspec.json.encode({"time": 1_700_000_000 + i, "id": f"{n}-{i}"})
            reader.append(Envelope(int(NOW * 1000), "legacy", "db", table, hash_key(key), record))
    lakes = [FlakyLake.open(s) for s in nodes]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            store = ControlStore.open(tmp_path / "control.sqlite")
            loader = Loader(nodes[n], readers[n], Directory(store, ttl_s=60), lakes[n])
            deadline = time.monotonic() + DEADLINE_S
            clock = NOW + 10
            while readers[n].pending({})[0] and time.monotonic() < deadline:
                clock += 1
                try:
                    loader.step(clock)
                except LakeError:
                    time.sleep(0.05)  # as the loader's run loop: the batch is read again
            store.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [r.pending({})[0] for r in readers] == [0, 0]
    for lake in lakes:
        assert sorted(lake.injected) == ["after", "before", "loader"]
    check = Lake.open(nodes[0], read_only=True)
    try:
        rows = check.query(
            "SELECT count(*), count(DISTINCT id) FROM "
            "(SELECT id FROM db.both UNION ALL SELECT id FROM db.only_0 "
            "UNION ALL SELECT id FROM db.only_1)"
        ).rows
        assert rows == [(2 * RECORDS_PER_NODE, 2 * RECORDS_PER_NODE)]
        assert check.import_errors(10).rows == []
    finally:
        check.close()
    # Each node's positions are its own, under its own name.
    for n, lake in enumerate(lakes):
        assert lake.positions() == {"s0": RECORDS_PER_NODE}, n
        lake.close()
    control.close()


def test_nodes_starting_at_once_set_a_new_catalog_up_once(
    tmp_path: Path, shared_lake: SharedLake
) -> None:
    catalog, data = shared_lake
    nodes = [_node(tmp_path, f"n{i}", catalog, data) for i in range(3)]
    opened: list[Lake] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(nodes))

    def run(settings: Settings) -> None:
        start.wait()
        try:
            opened.append(Lake.open(settings))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lake in opened:
        lake.close()
    assert not errors, errors
    assert len(opened) == len(nodes)


def test_a_table_another_node_just_made_does_not_fail_the_commit(
    tmp_path: Path, shared_lake: SharedLake
) -> None:
    """Each node caches the lake's tables; another node's new table or column makes the
    first attempt fail, and the retry (after reloading the cache) lands."""
    from tdedge.lake.batch import TableRows

    catalog, data = shared_lake
    a, b = (Lake.open(_node(tmp_path, name, catalog, data)) for name in ("a", "b"))
    try:
        a.commit(Batch([TableRows("db", "t", _table([1], x=[1.5]))], [], {"s0": 1}))
        b.commit(Batch([TableRows("db", "t", _table([2], y=["b"]))], [], {"s0": 1}))
        assert b.positions() == {"s0": 1}
        found = b.query("SELECT time, x, y FROM db.t ORDER BY time").rows
        assert found == [(1, 1.5, None), (2, None, "b")]
    finally:
        a.close()
        b.close()


def _table(times: list[int], **columns: list[Any]) -> Any:
    import pyarrow as pa

    return pa.table({"time": times, **columns})
