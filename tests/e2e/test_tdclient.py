"""Treasure Data's own Python clients (td-client, pytd) against the real server."""

from __future__ import annotations

import time
from typing import Any

import pytd
import pytd.dbapi
import pytd.pandas_td
import pytest
import tdclient
from tdclient import errors

from tests.e2e.conftest import Server
from tests.e2e.restapi_support import fluent_body, start_api_server

DAY = 1_700_006_400  # 2023-11-15 00:00:00 UTC


@pytest.fixture
def api(make_server: Any) -> tuple[Server, str]:
    return start_api_server(make_server)


@pytest.fixture
def client(api: tuple[Server, str]) -> tdclient.Client:
    srv, endpoint = api
    return tdclient.Client(apikey=srv.master_key, endpoint=endpoint)


def load_events(client: tdclient.Client, srv: Server, n: int = 48) -> None:
    """Hourly events over two days, uploaded the way fluent-plugin-td uploads a chunk."""
    records = [{"time": DAY + 3600 * i, "n": i, "kind": "a" if i % 2 else "b"} for i in range(n)]
    body = fluent_body(records)
    elapsed = client.api.import_data("web", "events", "msgpack.gz", body, len(body), "chunk-1")
    assert isinstance(elapsed, float)
    srv.wait_for("SELECT count(*) AS c FROM events", lambda r: r[0]["c"] == n, database="web")


def test_databases_and_tables(client: tdclient.Client, api: tuple[Server, str]) -> None:
    srv, _ = api
    assert client.create_database("web")
    with pytest.raises(errors.AlreadyExistsError):
        client.create_database("web")
    names = {d.name: d for d in client.databases()}
    assert "web" in names and names["web"].permission == "administrator"
    assert client.create_log_table("web", "events")
    with pytest.raises(errors.AlreadyExistsError):
        client.create_log_table("web", "events")
    with pytest.raises(errors.NotFoundError):
        client.create_log_table("nowhere", "events")
    table = client.table("web", "events")
    assert (table.count, table.schema, table.estimated_storage_size) == (0, [], 0)

    load_events(client, srv)
    table = client.table("web", "events")
    assert table.count == 48
    schema: Any = table.schema
    assert schema == [["n", "long"], ["kind", "string"]]
    # Small commits stay inlined in the catalog until compaction: no file bytes yet.
    assert isinstance(table.estimated_storage_size, int)
    assert table.last_log_timestamp is not None
    assert int(table.last_log_timestamp.timestamp()) == DAY + 3600 * 47
    assert client.api.delete_table("web", "events") == "log"
    assert [t.name for t in client.tables("web")] == []
    assert client.api.delete_database("web")
    assert "web" not in {d.name for d in client.databases()}


def test_presto_query_and_both_result_formats(
    client: tdclient.Client, api: tuple[Server, str]
) -> None:
    srv, _ = api
    client.create_database("web")
    load_events(client, srv)
    q = (
        "SELECT kind, count(*) AS c, sum(n) AS s, TD_TIME_FORMAT(min(time), 'yyyy-MM-dd', 'JST') "
        "FROM events WHERE TD_TIME_RANGE(time, '2023-11-15', '2023-11-16') "
        "GROUP BY kind ORDER BY kind"
    )
    job = client.query("web", q, type="presto")
    job.wait(timeout=60, wait_interval=1)
    assert job.success(), job.debug
    assert job.result_schema == [
        ["kind", "varchar"],
        ["c", "bigint"],
        ["s", "bigint"],
        ["_col3", "varchar"],
    ]
    expected = [
        ["a", 12, sum(range(1, 24, 2)), "2023-11-15"],
        ["b", 12, sum(range(0, 24, 2)), "2023-11-15"],
    ]
    got: Any = list(job.result())  # msgpack
    assert got == expected
    got = list(job.result_format("json"))
    assert got == expected
    assert job.num_records == 2
    # The result in Range-requested chunks of msgpack.gz, as download_job_result fetches it.
    rows: Any = list(client.api.job_result_format_each(job.job_id, "msgpack", store_tmpfile=True))
    assert rows == expected
    assert client.job_status(job.job_id) == "success"
    assert job.job_id in {j.job_id for j in client.jobs()}


def test_failed_query_reports_error(client: tdclient.Client, api: tuple[Server, str]) -> None:
    client.create_database("web")
    job = client.query("web", "SELECT nope FROM missing_table", type="trino")
    job.wait(timeout=60, wait_interval=1)
    assert job.error()
    assert "missing_table" in (job.debug or {}).get("stderr", "")


def test_dbapi_cursor(client: tdclient.Client, api: tuple[Server, str]) -> None:
    srv, endpoint = api
    client.create_database("web")
    load_events(client, srv, n=5)
    with tdclient.connect(
        apikey=srv.master_key, endpoint=endpoint, db="web", type="presto", wait_interval=1
    ) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT n FROM events ORDER BY n DESC LIMIT 2")
        assert cursor.fetchall() == [[4], [3]]
        assert [d[0] for d in cursor.description] == ["n"]


def test_pytd_reads_a_query_into_a_dataframe(
    client: tdclient.Client, api: tuple[Server, str]
) -> None:
    srv, endpoint = api
    client.create_database("web")
    load_events(client, srv)
    pc = pytd.Client(apikey=srv.master_key, endpoint=endpoint, database="web")
    try:
        res = pc.query(
            "SELECT kind, count(*) AS c FROM events GROUP BY kind ORDER BY kind",
            force_tdclient=True,
            wait_interval=1,
        )
        assert res == {"data": [["a", 24], ["b", 24]], "columns": ["kind", "c"]}
        engine = pc.get_engine("presto") if hasattr(pc, "get_engine") else pc.default_engine
        frame = pytd.pandas_td.read_td_query(
            "SELECT n, kind FROM events WHERE TD_INTERVAL(time, '-1d/2023-11-16') ORDER BY n",
            engine,
            params={"wait_interval": 1},
        )
    finally:
        pc.close()
    assert type(frame).__name__ == "DataFrame"
    assert list(frame.columns) == ["n", "kind"]
    assert frame["n"].tolist() == list(range(24))


def test_pytd_tables_jobs_and_dbapi_with_the_hive_engine(
    client: tdclient.Client, api: tuple[Server, str]
) -> None:
    # The Hive engine always goes through td-client's job API (pytd's Presto engine
    # speaks the Trino protocol unless told otherwise).
    srv, endpoint = api
    client.create_database("web")
    load_events(client, srv, n=6)
    pc = pytd.Client(
        apikey=srv.master_key, endpoint=endpoint, database="web", default_engine="hive"
    )
    try:
        engine = pytd.pandas_td.create_engine("hive:web", con=pc)
        frame = pytd.pandas_td.read_td_table(
            "events", engine, columns=["n", "kind"], time_range=(DAY + 3600, DAY + 3 * 3600)
        )
        assert sorted(frame["n"].tolist()) == [1, 2]
        job = client.query("web", "SELECT n FROM events WHERE n < 3 ORDER BY n", type="presto")
        by_job = pytd.pandas_td.read_td_job(int(job.job_id), engine)
        assert by_job["n"].tolist() == [0, 1, 2]
        connection = pytd.dbapi.connect(pc)
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) AS c FROM events")
        assert cursor.fetchall() == [[6]]
    finally:
        pc.close()


def test_td_client_calls_tdedge_does_not_serve(client: tdclient.Client) -> None:
    with pytest.raises(errors.NotFoundError):
        client.remove_user("someone@example.com")
    with pytest.raises(errors.NotFoundError):
        client.update_schedule("daily", {"cron": "0 * * * *"})
    with pytest.raises(errors.NotFoundError):
        client.delete_schedule("daily")
    client.close()


def test_import_with_id_is_idempotent(client: tdclient.Client, api: tuple[Server, str]) -> None:
    srv, _ = api
    client.create_database("web")
    body = fluent_body([{"time": DAY, "x": 1}, {"time": DAY + 1, "x": 2}])
    for _ in range(3):
        client.api.import_data("web", "once", "msgpack.gz", body, len(body), unique_id="u-1")
    client.api.import_data("web", "once", "msgpack.gz", body, len(body), unique_id="u-2")
    srv.wait_for("SELECT count(*) AS c FROM once", lambda r: r[0]["c"] == 4, database="web")
    time.sleep(1.5)  # a duplicate would have landed by now
    assert srv.query("SELECT count(*) AS c FROM once", database="web") == [{"c": 4}]
