"""Query jobs run in a real session over a real lake: result values of every type,
SHOW/DESCRIBE, UNNEST of JSON text, and the statements that write."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tdedge.config import Settings
from tdedge.control.jobs import JobResult, JobStore
from tdedge.control.keys import hash_key, key_id
from tdedge.control.store import ControlStore
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.lake import Lake
from tdedge.query.runner import JobRunner
from tdedge.query.session import Scope, Session
from tdedge.query.statements import Read, ShowTables, Target, Write, classify, result_target
from tdedge.query.translate import TranslationError
from tdedge.query.writes import TableWriter
from tdedge.results.format import rows
from tdedge.results.store import ResultFiles
from tests.unit.running_job import running_job

ISSUED = 1_700_000_000
_ids = itertools.count(1)


class Jobs:
    def __init__(self, settings: Settings, session: Session, writer: TableWriter) -> None:
        self.settings = settings
        self.session = session
        self.writer = writer
        self.writable = frozenset({"web"})

    def run(self, query: str, engine: str = "presto", url: str | None = None) -> JobResult:
        job = running_job(
            id=next(_ids), query=query, type=engine, scheduled_time=ISSUED, result_url=url
        )
        self.last = job.id
        return self.session.run(job, lambda: None, self.writer, self.writable)

    def rows(self, query: str, engine: str = "presto", url: str | None = None) -> list[Any]:
        result = self.run(query, engine, url)
        assert result.status == "success", result.error
        store = ResultFiles(self.settings.job_results_dir)
        gz = store.path(self.last).read_bytes()
        return rows(gz, result.num_records or 0, 1 << 30)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    settings = Settings(data_dir=str(tmp_path / "data"))
    lake = Lake.open(settings)
    try:
        events = pa.table(
            {
                "time": [1, 2, 3],
                "n": [1, 2, 3],
                "tags": ['["a","b"]', '[1,{"x":2}]', None],
            }
        )
        lake.commit(Batch([TableRows("web", "events", events)], [], {"s": 1}, []))
        theirs = pa.table({"time": [1], "secret": ["theirs"]})
        lake.commit(Batch([TableRows("other", "secrets", theirs)], [], {"s": 2}, []))
    finally:
        lake.close()
    session = Session(
        settings, Scope(1, frozenset({"web", "empty"})), 1, ResultFiles(settings.job_results_dir)
    )
    control = ControlStore.open(settings.control_db)
    writer = TableWriter(settings, control.engine)
    yield Jobs(settings, session, writer)
    writer.close()
    session.close()
    control.close()


# Result values.
def test_timestamps_with_microseconds_and_zones_are_stored(jobs: Jobs) -> None:
    got = jobs.rows(
        "SELECT TIMESTAMP '2024-01-02 03:04:05.678912' AS t, "
        "CAST(TIMESTAMP '2024-01-02 03:04:05.678912' AS TIMESTAMP WITH TIME ZONE) AS tz, "
        "now() IS NOT NULL AS n, DATE '2024-01-02' AS d"
    )
    assert got == [["2024-01-02 03:04:05.678", "2024-01-02 03:04:05.678 UTC", True, "2024-01-02"]]
    now = jobs.rows("SELECT now()")
    assert now[0][0].endswith(" UTC") and len(now[0][0]) == len("2024-01-02 03:04:05.678 UTC")


def test_every_other_type_is_stored(jobs: Jobs) -> None:
    got = jobs.rows(
        "SELECT CAST(1.50 AS DECIMAL(4,2)) AS d, INTERVAL '3' DAY AS i, "
        "ARRAY[TIMESTAMP '2024-01-02 00:00:00'] AS a, MAP(ARRAY['k'], ARRAY[1]) AS m, "
        "CAST(ROW(1, 'x') AS ROW(a INTEGER, b VARCHAR)) AS r, "
        "CAST(12345678901234567890 AS DECIMAL(38,0)) AS big"
    )
    assert got == [
        [
            "1.50",
            "3 00:00:00.000",
            ["2024-01-02 00:00:00.000"],
            {"k": 1},
            {"a": 1, "b": "x"},
            12345678901234567890,
        ]
    ]


# SHOW and DESCRIBE.
def test_show_tables_lists_only_the_accounts_tables(jobs: Jobs) -> None:
    assert jobs.rows("SHOW TABLES") == [["events"]]
    assert jobs.rows("SHOW TABLES FROM web LIKE 'ev%'") == [["events"]]
    assert jobs.rows("SHOW TABLES FROM empty") == []
    refused = jobs.run("SHOW TABLES FROM other")
    assert refused.status == "error" and "other" in (refused.error or "")
    assert "secrets" not in str(refused.error)


def test_show_schemas_lists_only_the_accounts_databases(jobs: Jobs) -> None:
    assert jobs.rows("SHOW SCHEMAS") == [["empty"], ["web"]]
    assert jobs.rows("SHOW DATABASES LIKE 'w%'") == [["web"]]


def test_show_columns_and_describe(jobs: Jobs) -> None:
    expected = [
        ["time", "bigint", "", ""],
        ["n", "bigint", "", ""],
        ["tags", "varchar", "", ""],
    ]
    assert jobs.rows("SHOW COLUMNS FROM events") == expected
    assert jobs.rows("DESCRIBE web.events") == expected
    assert jobs.rows("DESCRIBE events", engine="hive")[2] == ["tags", "string", "", ""]
    assert jobs.run("DESCRIBE other.secrets").status == "error"


# UNNEST.
@pytest.mark.parametrize(
    "source",
    [
        "tags",
        "CAST(json_parse(tags) AS ARRAY(VARCHAR))",
        "CAST(JSON_PARSE(tags) AS ARRAY<VARCHAR>)",
    ],
)
def test_unnest_of_json_text(jobs: Jobs, source: str) -> None:
    got = jobs.rows(
        f"SELECT n, tag FROM events CROSS JOIN UNNEST({source}) AS x(tag) ORDER BY n, tag"
    )
    assert got == [[1, "a"], [1, "b"], [2, "1"], [2, '{"x":2}']]


# Writes.
def test_insert_values_evolves_the_schema_as_ingest_does(jobs: Jobs) -> None:
    assert jobs.rows("INSERT INTO events (n, extra) VALUES (10, 'x'), (11, 'y')") == [[2]]
    got = jobs.rows("SELECT time, n, extra FROM events WHERE n >= 10 ORDER BY n")
    assert got == [[ISSUED, 10, "x"], [ISSUED, 11, "y"]]
    # A float widens the BIGINT column; a string it cannot hold goes to td_type_conflicts.
    jobs.rows("INSERT INTO events SELECT 2.5 AS n, 12 AS time")
    jobs.rows("INSERT INTO events SELECT 'nope' AS n, 13 AS time")
    assert jobs.rows("DESCRIBE events")[1] == ["n", "double", "", ""]
    got = jobs.rows(
        "SELECT time, n, td_type_conflicts FROM events WHERE time IN (12, 13) ORDER BY time"
    )
    assert got == [[12, 2.5, None], [13, None, '{"n":"nope"}']]


def test_create_table_as_and_delete(jobs: Jobs) -> None:
    assert jobs.rows("CREATE TABLE copy AS SELECT n, time FROM events WHERE n > 1") == [[2]]
    assert jobs.rows("SELECT time, n FROM copy ORDER BY n") == [[2, 2], [3, 3]]
    again = jobs.run("CREATE TABLE copy AS SELECT 1 AS n")
    assert again.status == "error" and "already exists" in (again.error or "")
    assert jobs.rows("CREATE TABLE IF NOT EXISTS copy AS SELECT 1 AS n") == [[0]]
    assert jobs.rows("DELETE FROM copy WHERE n = 2") == [[1]]
    assert jobs.rows("SELECT n FROM copy") == [[3]]
    assert jobs.rows("DELETE FROM copy") == [[1]]
    assert jobs.rows("SELECT count(*) FROM copy") == [[0]]
    assert jobs.rows("CREATE TABLE made (a bigint, b varchar, c double)") == [[True]]
    assert [r[:2] for r in jobs.rows("DESCRIBE made")] == [
        ["time", "bigint"],
        ["a", "bigint"],
        ["b", "varchar"],
        ["c", "double"],
    ]
    assert jobs.rows("CREATE TABLE empty_copy AS SELECT n FROM events WHERE false") == [[0]]
    assert jobs.rows("SHOW TABLES LIKE 'empty%'") == [["empty_copy"]]


def test_drop_table_drops_it_as_the_rest_api_does(jobs: Jobs) -> None:
    assert jobs.rows("CREATE TABLE gone AS SELECT 1 AS n") == [[1]]
    assert jobs.rows("DROP TABLE gone") == [[True]]
    assert jobs.rows("SHOW TABLES LIKE 'gone'") == []
    missing = jobs.run("SELECT n FROM gone")
    assert missing.status == "error"
    again = jobs.run("DROP TABLE web.gone")
    assert again.status == "error" and "does not exist" in (again.error or "")
    assert jobs.rows("DROP TABLE IF EXISTS gone") == [[False]]
    # Made again, it starts empty: nothing of the dropped one is left.
    assert jobs.rows("CREATE TABLE gone (a varchar)") == [[True]]
    assert jobs.rows("SELECT count(*) FROM gone") == [[0]]


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO other.secrets SELECT 'x' AS secret",
        "INSERT INTO tdedge_system.import_errors SELECT 'x' AS reason",
        "CREATE TABLE other.t AS SELECT 1 AS a",
        "DELETE FROM other.secrets",
        "DROP TABLE other.secrets",
        "DROP TABLE IF EXISTS tdedge_system.import_errors",
        "INSERT INTO lake.other.secrets SELECT 'x' AS secret",
        "INSERT INTO nowhere SELECT 1 AS a",
        "INSERT INTO events SELECT 1 + 1",
    ],
)
def test_writes_outside_the_accounts_tables_are_refused(jobs: Jobs, query: str) -> None:
    result = jobs.run(query)
    assert result.status == "error", query
    lake = Lake.open(jobs.settings, read_only=True)
    try:
        assert lake.query("SELECT secret FROM lake.other.secrets").rows == [("theirs",)]
        assert lake.query("SELECT count(*) FROM lake.web.events").rows == [(3,)]
    finally:
        lake.close()


def test_tdedges_own_columns_are_never_written(jobs: Jobs) -> None:
    assert jobs.rows("CREATE TABLE forged AS SELECT 1 AS n, 'x' AS _tdedge_id") == [[1]]
    assert [r[0] for r in jobs.rows("DESCRIBE forged")] == ["time", "n"]


def test_a_key_that_may_not_write_writes_nothing(jobs: Jobs) -> None:
    jobs.writable = frozenset()
    result = jobs.run("INSERT INTO events SELECT 9 AS n")
    assert result.status == "error" and "may not write" in (result.error or "")
    jobs.writable = frozenset({"web"})
    assert jobs.rows("SELECT count(*) FROM events") == [[3]]


def test_a_job_is_written_once(jobs: Jobs) -> None:
    """A job run again (its runner died after the commit) writes nothing more."""
    jobs.rows("INSERT INTO events SELECT 100 AS n")
    again = running_job(
        id=jobs.last,
        query="INSERT INTO events SELECT 100 AS n",
        scheduled_time=ISSUED,
        attempts=2,
    )
    assert jobs.session.run(again, lambda: None, jobs.writer, jobs.writable).status == "success"
    assert jobs.rows("SELECT count(*) FROM events WHERE n = 100") == [[1]]


def test_a_result_is_written_into_a_table(jobs: Jobs) -> None:
    got = jobs.rows("SELECT n, 'a' AS k FROM events ORDER BY n", url="td://@/web/out")
    assert got == [[1, "a"], [2, "a"], [3, "a"]]
    jobs.rows("SELECT 4 AS n", url="td://@/web/out?mode=append")
    assert jobs.rows("SELECT n, k FROM out ORDER BY n") == [[1, "a"], [2, "a"], [3, "a"], [4, None]]
    jobs.rows("SELECT 5 AS n", url="td://@/web/out?mode=replace")
    assert jobs.rows("SELECT n FROM out") == [[5]]
    assert jobs.run("SELECT 1 AS n", url="td://@/other/secrets").status == "error"


# Statements.
def test_statements_are_told_apart() -> None:
    assert isinstance(classify("-- pytd\nSELECT 1", "presto", "web"), Read)
    assert classify("SHOW TABLES IN db2", "presto", "web") == ShowTables("db2", None)
    write = classify("INSERT INTO t (a) VALUES (1)", "presto", "web")
    assert isinstance(write, Write) and write.target.table == "t" and write.kind == "insert"
    with pytest.raises(TranslationError, match="OVERWRITE"):
        classify("INSERT OVERWRITE TABLE t SELECT 1", "hive", "web")
    assert classify("DROP TABLE IF EXISTS db2.t", "presto", "web") == Write(
        "drop", Target("db2", "t"), if_exists=True
    )
    with pytest.raises(TranslationError):
        classify("DROP VIEW t", "presto", "web")
    with pytest.raises(TranslationError):
        result_target("td://somekey@/web/t")
    assert result_target("td://@/web/t?mode=replace").replace


def test_a_job_whose_key_was_revoked_since_writes_nothing(jobs: Jobs) -> None:
    """The runner asks the access rule when the job runs, not only when it was issued."""
    settings = jobs.settings
    control = ControlStore.open(settings.control_db)
    store = JobStore.open(settings.control_db)
    try:
        control.ensure_account(1)
        control.create_database("web", 1)
        master = control.create_key(1, "master")
        ident = key_id(hash_key(master))
        issued = []
        for query in ("INSERT INTO events SELECT 7 AS n", "INSERT INTO events SELECT 8 AS n"):
            job = store.create(
                account_id=1, key_id=ident, type="presto", database="web", query=query, now=1.0
            )
            issued.append(job.id)
            if len(issued) == 1:
                _run_queued(settings, store, control)
                control.revoke_key(ident)
        _run_queued(settings, store, control)
        first, second = (store.get(i) for i in issued)
        assert first is not None and first.status == "success", first
        assert second is not None and second.status == "error"
        assert "may not write" in (second.error or "")
    finally:
        store.close()
        control.close()
    assert jobs.rows("SELECT n FROM events WHERE n >= 7") == [[7]]


def _run_queued(settings: Settings, store: JobStore, control: ControlStore) -> None:
    runner = JobRunner(settings, store, control, ResultFiles(settings.job_results_dir))
    with ThreadPoolExecutor(1) as pool:
        runner.tick(pool, 2.0)
    runner.close()
