"""Query jobs that write (INSERT, CREATE TABLE AS, DELETE) on one node while another
node's loader loads the same tables, on a shared lake (a PostgreSQL catalog, files on
S3): every ingested record lands once, every job's write lands once.

On a shared catalog the nodes' commits are not serialised by a lock (each node has its
own); DuckLake's conflicts and the retries they need are what keep the two apart.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import msgspec

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.errors import LakeError
from tdedge.journal.envelope import Envelope
from tdedge.lake.lake import Lake
from tdedge.loader.runner import Loader
from tdedge.query.session import Scope, Session
from tdedge.query.writes import TableWriter
from tdedge.results.store import ResultFiles
from tests.unit.contracts.conftest import SharedLake
from tests.unit.loader.test_loader import MemoryReader
from tests.unit.running_job import running_job

BATCH = 15
INSERTS = 12
NOW = 1_750_000_000.0
DEADLINE_S = 300.0
_ids = itertools.count(1)


def _node(root: Path, name: str, catalog: str, data: str) -> Settings:
    return Settings(
        data_dir=str(root / name),
        lake_catalog=catalog,
        lake_data=data,
        loader_batch_max_records=BATCH,
        loader_batch_max_wait_s=0.0,
    )


def test_job_writes_on_one_node_and_loading_on_another_each_land_once(
    tmp_path: Path, shared_lake: SharedLake
) -> None:
    catalog, data = shared_lake
    control = ControlStore.open(tmp_path / "control.sqlite")
    key = control.create_key(1, "master")
    control.create_database("web", 1)
    loading, querying = (_node(tmp_path, n, catalog, data) for n in ("loader", "jobs"))
    reader = MemoryReader()
    sent = itertools.count()

    def feed(records: int) -> None:
        for _ in range(records):
            i = next(sent)
            record = msgspec.json.encode({"time": 1_700_000_000 + i, "id": f"r{i}", "n": i})
            env = Envelope(int(NOW * 1000), "legacy", "web", "events", hash_key(key), record)
            reader.append(env)

    feed(BATCH)
    lake = Lake.open(loading)
    ingest = Loader(loading, reader, Directory(control, ttl_s=60), lake)
    ingest.step(NOW + 1)  # the first batch makes the table the jobs' INSERTs need
    errors: list[BaseException] = []
    jobs_done = threading.Event()

    def load() -> None:
        """Load batch after batch for as long as the jobs run, then what is left."""
        try:
            deadline = time.monotonic() + DEADLINE_S
            clock = NOW + 10
            while time.monotonic() < deadline:
                if not reader.pending({})[0]:
                    if jobs_done.is_set():
                        return
                    feed(BATCH)
                clock += 1
                try:
                    ingest.step(clock)
                except LakeError:
                    time.sleep(0.05)  # as the loader's run loop: the batch is read again
        except BaseException as e:
            errors.append(e)

    session = Session(
        querying, Scope(1, frozenset({"web"})), 1, ResultFiles(querying.job_results_dir)
    )
    writer = TableWriter(querying, control.engine)
    writable = frozenset({"web"})
    statuses: list[tuple[str, str | None]] = []

    def run(query: str) -> None:
        result = session.run(
            running_job(id=next(_ids), query=query, scheduled_time=1_700_000_000),
            lambda: None,
            writer,
            writable,
        )
        statuses.append((result.status, result.error))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        for k in range(INSERTS):
            run(f"INSERT INTO events SELECT {1_700_100_000 + k} AS time, 'job{k}' AS id")
            if k == 3:
                run("CREATE TABLE copy AS SELECT id, n FROM events WHERE n IS NOT NULL")
            if k == 6:
                run("DELETE FROM copy WHERE n % 2 = 0")
            if k == 9:  # rows of the very table the loader appends to
                run("DELETE FROM events WHERE id IN ('job0', 'job1')")
    finally:
        jobs_done.set()
        loader.join()
        writer.close()
        session.close()
        lake.close()
    assert not errors, errors
    assert statuses == [("success", None)] * (INSERTS + 3)
    assert reader.pending({})[0] == 0
    records = next(sent)
    check = Lake.open(loading, read_only=True)
    try:
        events = check.query("SELECT count(*), count(DISTINCT id) FROM web.events").rows
        kept = records + INSERTS - 2
        assert events == [(kept, kept)]
        copied = check.query(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE n % 2 = 0) FROM web.copy"
        ).rows
        (count, distinct, even) = copied[0]
        # The copy took what was loaded when it ran (some of the records), each once,
        # and the DELETE took every even one of them.
        assert 0 < count == distinct < records and even == 0
    finally:
        check.close()
        control.close()
