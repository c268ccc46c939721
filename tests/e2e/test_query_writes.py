"""Query jobs that write, through td-client and pytd against the real server: INSERT,
CREATE TABLE AS, DELETE, results written into tables, SHOW/DESCRIBE, result types;
and INSERT jobs racing the loader into the same table, nothing lost or doubled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytd
import pytest
import tdclient
from pytd.query_engine import PrestoQueryEngine

from tests.e2e.conftest import Server, free_port, wait_healthy

DAY = 1_700_006_400


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    port = free_port()
    srv = Server(tmp_path / "data", ["--api-port", str(port)])
    try:
        srv.start(timeout=120)  # the machine running the tests may be slow to start it
        endpoint = f"http://127.0.0.1:{port}"
        wait_healthy(endpoint, timeout=120)
        tdclient.Client(apikey=srv.master_key, endpoint=endpoint).create_database("web")
        yield srv, endpoint
    finally:
        srv.kill()


def run(client: tdclient.Client, query: str, **kw: Any) -> Any:
    job = client.query("web", query, type="presto", **kw)
    job.wait(timeout=120, wait_interval=1)
    return job


def ok(client: tdclient.Client, query: str, **kw: Any) -> list[Any]:
    job = run(client, query, **kw)
    assert job.success(), (query, job.debug)
    return list(job.result())


def test_writes_and_show_through_td_client(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    assert ok(client, "CREATE TABLE events AS SELECT 1 AS n, 'a' AS k, 1700000000 AS time") == [[1]]
    assert ok(client, "INSERT INTO web.events (n, k, extra) VALUES (2, 'b', 1.5), (3, 'c', NULL)")
    assert ok(client, "SHOW TABLES") == [["events"]]
    assert ok(client, "DESCRIBE events") == [
        ["n", "bigint", "", ""],
        ["k", "varchar", "", ""],
        ["time", "bigint", "", ""],
        ["extra", "double", "", ""],
    ]
    assert ok(client, "DELETE FROM events WHERE n = 3") == [[1]]
    assert ok(client, "SELECT n, k, extra FROM events ORDER BY n") == [
        [1, "a", None],
        [2, "b", 1.5],
    ]
    # The table as td-client lists it: the written columns in its schema.
    table = client.table("web", "events")
    schema: Any = table.schema
    assert ["extra", "double"] in schema
    # A result written into a table too (td-client's result_url).
    job = run(client, "SELECT n * 10 AS m FROM events", result_url="td://@/web/tens")
    assert job.success(), job.debug
    assert ok(client, "SELECT m FROM tens ORDER BY m") == [[10], [20]]
    refused = run(client, "INSERT INTO nowhere.t SELECT 1 AS a")
    assert refused.error() and "nowhere" in refused.debug["stderr"]
    # Presto's division: a decimal keeps the larger scale; a double by zero is infinite.
    assert ok(client, "SELECT 1.0 / 3, 7 / 2, 1e0 / 0, count(*) * 1.0 / 3 FROM events") == [
        ["0.3", 3, float("inf"), "0.7"]
    ]
    # DROP TABLE, as the REST API's table delete: gone from td-client's listing too.
    assert ok(client, "DROP TABLE tens") == [[True]]
    assert [t.name for t in client.tables("web")] == ["events"]
    assert ok(client, "DROP TABLE IF EXISTS tens") == [[False]]
    several = run(client, "DROP TABLE IF EXISTS events; SELECT 1")
    assert several.error() and "exactly one statement" in several.debug["stderr"]
    assert [t.name for t in client.tables("web")] == ["events"]


def test_now_and_other_timestamps_are_returned(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    job = run(client, "SELECT now() AS n, current_timestamp AS c, localtimestamp AS l")
    assert job.success(), job.debug
    assert job.result_schema == [
        ["n", "timestamp with time zone"],
        ["c", "timestamp with time zone"],
        ["l", "timestamp"],
    ]
    (row,) = list(job.result())
    assert row[0].endswith(" UTC") and len(row[2]) == len("2024-01-01 00:00:00.000")
    (as_json,) = list(job.result_format("json"))
    assert as_json == row


class _RestPresto(PrestoQueryEngine):
    """pytd's Presto engine issuing every query as a REST job (td-client), as it does
    with ``force_tdclient``: tdedge serves the REST job API, not Trino's protocol."""

    def cursor(self, force_tdclient: bool = True, **kwargs: Any) -> Any:
        return super().cursor(force_tdclient=True, wait_interval=1, **kwargs)


def test_pytd_insert_into_writer(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    pc = pytd.Client(apikey=srv.master_key, endpoint=endpoint, database="web")
    try:
        pc.default_engine = _RestPresto(srv.master_key, endpoint, "web", pc.default_engine.header)
        frame = pd.DataFrame(
            {"i": [1, 2, 3], "f": [0.5, None, 2.5], "s": ["x", "it's", "z"], "time": [DAY] * 3}
        )
        pc.load_table_from_dataframe(frame, "web.frame", writer="insert_into", if_exists="error")
        more = pd.DataFrame({"i": [4], "f": [4.5], "s": ["y"], "time": [DAY + 1]})
        pc.load_table_from_dataframe(more, "web.frame", writer="insert_into", if_exists="append")
        got = pc.query("SELECT i, f, s, time FROM frame ORDER BY i", force_tdclient=True)
        assert got["data"] == [
            [1, 0.5, "x", DAY],
            [2, None, "it's", DAY],
            [3, 2.5, "z", DAY],
            [4, 4.5, "y", DAY + 1],
        ]
        pc.load_table_from_dataframe(more, "web.frame", writer="insert_into", if_exists="overwrite")
        got = pc.query("SELECT i FROM frame", force_tdclient=True)
        assert got["data"] == [[4]]
    finally:
        pc.close()


def test_insert_jobs_while_the_loader_loads_the_same_table(api: tuple[Server, str]) -> None:
    """Every ingested record and every inserted row lands exactly once."""
    srv, endpoint = api
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    records, inserts, per_insert = 400, 8, 50
    srv.postback("web", "race", {"src": "seed", "id": -1}, key=srv.write_key)
    srv.wait_for("SELECT count(*) AS c FROM race", lambda r: r[0]["c"] == 1, "web", 60)

    failures: list[str] = []

    def ingest() -> None:
        for i in range(records):
            r = srv.postback("web", "race", {"src": "ingest", "id": i}, key=srv.write_key)
            if r.status_code != 200:
                failures.append(r.text)

    sender = threading.Thread(target=ingest)
    sender.start()
    jobs = []
    for k in range(inserts):
        query = (
            f"INSERT INTO race SELECT 'job' AS src, CAST(x AS BIGINT) AS id "
            f"FROM UNNEST(sequence({k * per_insert}, {(k + 1) * per_insert - 1})) AS t(x)"
        )
        jobs.append(client.query("web", query, type="presto"))
    for job in jobs:
        job.wait(timeout=180, wait_interval=1)
        assert job.success(), job.debug
    sender.join()
    assert not failures
    expected = records + inserts * per_insert + 1
    srv.wait_for("SELECT count(*) AS c FROM race", lambda r: r[0]["c"] >= expected, "web", 120)
    counts = srv.query(
        "SELECT src, count(*) AS c, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi "
        "FROM race GROUP BY src ORDER BY src",
        database="web",
    )
    assert counts == [
        {"src": "ingest", "c": records, "d": records, "lo": 0, "hi": records - 1},
        {
            "src": "job",
            "c": inserts * per_insert,
            "d": inserts * per_insert,
            "lo": 0,
            "hi": inserts * per_insert - 1,
        },
        {"src": "seed", "c": 1, "d": 1, "lo": -1, "hi": -1},
    ]
    assert srv.errors() == []
