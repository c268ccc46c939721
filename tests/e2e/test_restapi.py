"""The /v3 REST API over raw HTTP: keys, error bodies, result formats, Range, kill, timeout."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from tests.e2e.conftest import Server, free_port
from tests.e2e.restapi_support import fluent_body, start_api_server, td1, wait_job

DAY = 1_700_006_400
ROWS = 600


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """One server for the module (two edge workers, a short job timeout), with data."""
    port = free_port()
    srv = Server(
        Path(tmp_path_factory.mktemp("restapi")) / "data",
        ["--api-port", str(port), "--workers", "2", "--job-timeout", "3"],
    )
    srv.start(timeout=60)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_open(endpoint)
        records = [{"time": DAY + 60 * i, "n": i, "s": f"v,{i}"} for i in range(ROWS)]
        body = fluent_body(records)
        r = httpx.put(
            f"{endpoint}/v3/table/import/test_db/events/msgpack.gz",
            content=body,
            headers={**td1(srv.write_key), "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        srv.wait_for(
            "SELECT count(*) AS c FROM events",
            lambda x: x[0]["c"] == ROWS,
            database="test_db",
            timeout=60,
        )
        yield srv, endpoint
    finally:
        srv.kill()


def _wait_open(endpoint: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{endpoint}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("api port closed")


def issue(endpoint: str, key: str, query: str, engine: str = "presto") -> str:
    # The Ruby client's way: form-urlencoded (td-client-python's multipart is covered too).
    r = httpx.post(
        f"{endpoint}/v3/job/issue/{engine}/test_db", data={"query": query}, headers=td1(key)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["job"] == body["job_id"] and body["database"] == "test_db"
    return str(body["job_id"])


READS = [
    ("GET", "/v3/database/list"),
    ("POST", "/v3/database/create/other"),
    ("POST", "/v3/database/delete/test_db"),
    ("GET", "/v3/table/list/test_db"),
    ("GET", "/v3/table/show/test_db/events"),
    ("POST", "/v3/table/create/test_db/t2/log"),
    ("POST", "/v3/table/delete/test_db/events"),
    ("POST", "/v3/job/issue/presto/test_db"),
    ("GET", "/v3/job/status/1"),
    ("GET", "/v3/job/show/1"),
    ("GET", "/v3/job/result/1?format=json"),
    ("POST", "/v3/job/kill/1"),
    ("GET", "/v3/job/list"),
]


@pytest.mark.parametrize(("method", "path"), READS)
def test_write_key_is_refused_on_every_read_endpoint(
    api: tuple[Server, str], method: str, path: str
) -> None:
    srv, endpoint = api
    r = httpx.request(
        method, f"{endpoint}{path}", headers=td1(srv.write_key), data={"query": "SELECT 1"}
    )
    assert r.status_code == 403
    body = r.json()
    assert set(body) == {"error", "message", "severity"}
    assert "master key" in body["message"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "TD1 1/nope"}, {"Authorization": "Bearer x"}]
)
def test_missing_or_unknown_key_is_401(api: tuple[Server, str], headers: dict[str, str]) -> None:
    _, endpoint = api
    r = httpx.get(f"{endpoint}/v3/database/list", headers=headers)
    assert r.status_code == 401
    assert r.json()["severity"] == "error"


def test_not_found_bodies(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    key = td1(srv.master_key)
    for path in ("/v3/table/list/nowhere", "/v3/job/status/999999", "/v3/nothing/here"):
        r = httpx.get(f"{endpoint}{path}", headers=key)
        assert r.status_code == 404, path
        assert set(r.json()) == {"error", "message", "severity"}


def test_another_accounts_database_is_invisible(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    other = srv.cli("keys", "create", "--account", "2", "--type", "master").stdout.strip()
    assert httpx.get(f"{endpoint}/v3/table/list/test_db", headers=td1(other)).status_code == 404
    listed = httpx.get(f"{endpoint}/v3/database/list", headers=td1(other)).json()["databases"]
    assert "test_db" not in {d["name"] for d in listed}
    r = httpx.post(f"{endpoint}/v3/database/create/theirs", headers=td1(other))
    assert r.status_code == 200
    job = issue_in(endpoint, other, "theirs", "SELECT count(*) FROM test_db.events")
    done = wait_job(endpoint, other, job)
    assert done["status"] == "error"


def issue_in(endpoint: str, key: str, database: str, query: str) -> str:
    r = httpx.post(
        f"{endpoint}/v3/job/issue/presto/{database}", data={"query": query}, headers=td1(key)
    )
    assert r.status_code == 200, r.text
    return str(r.json()["job_id"])


def test_result_formats_and_range(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    key = td1(srv.master_key)
    job = issue(endpoint, srv.master_key, "SELECT n, s FROM events WHERE n < 3 ORDER BY n")
    assert wait_job(endpoint, srv.master_key, job)["status"] == "success"
    url = f"{endpoint}/v3/job/result/{job}"
    expected = [[0, "v,0"], [1, "v,1"], [2, "v,2"]]

    as_json = httpx.get(url, params={"format": "json"}, headers=key)
    assert [
        httpx.Response(200, content=line).json() for line in as_json.content.splitlines()
    ] == expected
    as_msgpack = httpx.get(url, params={"format": "msgpack"}, headers=key).content
    assert list(msgpack.Unpacker(io.BytesIO(as_msgpack), raw=False)) == expected
    as_csv = httpx.get(url, params={"format": "csv", "header": "true"}, headers=key).text
    assert list(csv.reader(io.StringIO(as_csv))) == [
        ["n", "s"],
        ["0", "v,0"],
        ["1", "v,1"],
        ["2", "v,2"],
    ]
    as_tsv = httpx.get(url, params={"format": "tsv"}, headers=key).text
    assert as_tsv.splitlines() == ["0\tv,0", "1\tv,1", "2\tv,2"]

    whole = httpx.get(url, params={"format": "msgpack.gz"}, headers=key)
    assert whole.status_code == 200
    show = httpx.get(f"{endpoint}/v3/job/show/{job}", headers=key).json()
    assert show["result_size"] == len(whole.content)
    assert show["hive_result_schema"] == '[["n","bigint"],["s","varchar"]]'
    assert show["num_records"] == 3 and show["result"] == ""
    assert gzip.decompress(whole.content) == as_msgpack
    head = httpx.get(url, params={"format": "msgpack.gz"}, headers={**key, "Range": "bytes=0-9"})
    tail = httpx.get(url, params={"format": "msgpack.gz"}, headers={**key, "Range": "bytes=10-"})
    assert (head.status_code, tail.status_code) == (206, 206)
    assert head.headers["content-range"] == f"bytes 0-9/{len(whole.content)}"
    assert head.content + tail.content == whole.content
    beyond = httpx.get(
        url, params={"format": "msgpack.gz"}, headers={**key, "Range": "bytes=99999-"}
    )
    assert beyond.status_code == 416


def test_jobs_are_seen_from_every_worker(api: tuple[Server, str]) -> None:
    """Issue several jobs on fresh connections (granian spreads them over both workers)."""
    srv, endpoint = api
    jobs = [issue(endpoint, srv.master_key, f"SELECT {i} AS i") for i in range(6)]
    for i, job in enumerate(jobs):
        assert wait_job(endpoint, srv.master_key, job)["status"] == "success"
        r = httpx.get(
            f"{endpoint}/v3/job/result/{job}",
            params={"format": "json"},
            headers=td1(srv.master_key),
        )
        assert r.json() == [i]
    listed = httpx.get(
        f"{endpoint}/v3/job/list", params={"from": "0", "to": "100"}, headers=td1(srv.master_key)
    )
    assert set(jobs) <= {j["job_id"] for j in listed.json()["jobs"]}


# A query that runs for minutes: a four-way self join of 600 rows.
SLOW = (
    "SELECT count(*) FROM events a, events b, events c, events d WHERE a.n + b.n + c.n + d.n = -1"
)


def test_kill_a_running_job(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    job = issue(endpoint, srv.master_key, SLOW)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = httpx.get(f"{endpoint}/v3/job/status/{job}", headers=td1(srv.master_key)).json()
        if state["status"] == "running":
            break
        time.sleep(0.1)
    r = httpx.post(f"{endpoint}/v3/job/kill/{job}", headers=td1(srv.master_key))
    assert r.status_code == 200
    assert r.json() == {"former_status": "running", "job_id": job}
    assert wait_job(endpoint, srv.master_key, job, timeout=20)["status"] == "killed"


def test_job_over_its_timeout_fails(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    job = issue(endpoint, srv.master_key, SLOW)
    assert wait_job(endpoint, srv.master_key, job, timeout=30)["status"] == "error"
    show = httpx.get(f"{endpoint}/v3/job/show/{job}", headers=td1(srv.master_key)).json()
    assert "timed out" in show["debug"]["stderr"]


def test_write_key_imports_and_rows_go_through_the_journal(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    body = fluent_body([{"time": DAY, "via": "import"}])
    r = httpx.put(
        f"{endpoint}/v3/table/import_with_id/test_db/imported/abc123/msgpack.gz",
        content=body,
        headers=td1(srv.write_key),
    )
    assert r.status_code == 200
    answer: dict[str, Any] = r.json()
    assert answer["unique_id"] == "abc123" and isinstance(answer["elapsed_time"], float)
    assert answer["md5_hex"] == hashlib.md5(body).hexdigest()
    rows = srv.wait_for("SELECT via, time FROM imported", lambda x: len(x) == 1, database="test_db")
    assert rows == [{"via": "import", "time": DAY}]
    # A write key cannot create a database by importing into it.
    r = httpx.put(
        f"{endpoint}/v3/table/import/nodb/t/msgpack.gz", content=body, headers=td1(srv.write_key)
    )
    assert r.status_code == 404


def test_a_unique_id_loads_once_however_often_it_is_journaled(api: tuple[Server, str]) -> None:
    """Uploads of one unique_id racing on the two workers, then a retry after the edge
    lost its record of the id (as when killed between journaling and recording it)."""
    srv, endpoint = api
    n = 5_000
    body = fluent_body({"time": DAY + i, "n": i} for i in range(n))
    url = f"{endpoint}/v3/table/import_with_id/test_db/racing/chunk-1/msgpack.gz"
    duplicates_before = _counter(endpoint, "tdedge_import_duplicates_total")
    start = threading.Barrier(6)

    def upload(_: int) -> int:
        with httpx.Client(headers=td1(srv.write_key), timeout=30) as client:
            client.get(f"{endpoint}/healthz")  # connected before the start
            start.wait()
            return client.put(url, content=body).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(upload, range(6))) == [200] * 6
    with closing(sqlite3.connect(srv.data_dir / "control.sqlite")) as conn, conn:
        conn.execute("DELETE FROM bulk_imports WHERE unique_id = 'chunk-1'")
    assert httpx.put(url, content=body, headers=td1(srv.write_key)).status_code == 200
    # The retry's copy was journaled: wait until the loader has dropped it.
    deadline = time.monotonic() + 30
    while _counter(endpoint, "tdedge_import_duplicates_total") < duplicates_before + n:
        assert time.monotonic() < deadline, "the loader never dropped the retry"
        time.sleep(0.2)
    assert srv.query("SELECT count(*) AS c, count(DISTINCT n) AS d FROM test_db.racing") == [
        {"c": n, "d": n}
    ]
    loaded = srv.query(
        "SELECT database_name, table_name, records FROM tdedge_system.bulk_imports "
        "WHERE unique_id = 'chunk-1'"
    )
    assert loaded == [{"database_name": "test_db", "table_name": "racing", "records": n}]


def _counter(endpoint: str, name: str) -> float:
    text = httpx.get(f"{endpoint}/metrics").text  # the operators' port: the API port
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


def test_bad_import_bodies(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    url = f"{endpoint}/v3/table/import/test_db/bad/msgpack.gz"
    not_gzip = httpx.put(url, content=b"plain", headers=td1(srv.write_key))
    assert not_gzip.status_code == 400 and not_gzip.json()["error"] == "invalid_gzip"
    not_maps = httpx.put(
        url, content=gzip.compress(msgpack.packb([1, 2])), headers=td1(srv.write_key)
    )
    assert not_maps.status_code == 400 and not_maps.json()["error"] == "not_an_object"


def test_results_are_deleted_after_their_retention(make_server: Any) -> None:
    # 0.00003 days: about 2.6 s.
    srv, endpoint = start_api_server(make_server, "--job-result-days", "0.00003")
    key = srv.master_key
    r = httpx.post(
        f"{endpoint}/v3/job/issue/presto/test_db", data={"query": "SELECT 1"}, headers=td1(key)
    )
    assert r.status_code == 200, r.text
    job = str(r.json()["job_id"])
    assert wait_job(endpoint, key, job)["status"] == "success"
    url = f"{endpoint}/v3/job/result/{job}"
    deadline = time.monotonic() + 30
    while (gone := httpx.get(url, params={"format": "json"}, headers=td1(key))).status_code == 200:
        assert time.monotonic() < deadline, "the result was never deleted"
        time.sleep(0.3)
    assert gone.status_code == 404 and "results are kept" in gone.text, gone.text
    assert not list((srv.data_dir / "results").glob(f"{job}.*"))
    listed = httpx.get(f"{endpoint}/v3/job/show/{job}", headers=td1(key)).json()
    assert listed["status"] == "success"


def test_tables_are_made_and_dropped_while_the_loader_commits(make_server: Any) -> None:
    """Table DDL takes turns with the loader's commits: none is refused for the other."""
    srv, endpoint = start_api_server(make_server)
    stop = threading.Event()
    sent = 0

    def stream() -> None:
        nonlocal sent
        while not stop.is_set():
            r = srv.postback("test_db", "stream", {"n": sent}, key=srv.write_key)
            assert r.status_code == 200, r.text
            sent += 1

    with ThreadPoolExecutor(2) as pool:
        writers = [pool.submit(stream) for _ in range(2)]
        try:
            answers = []
            for i in range(12):
                made = httpx.post(
                    f"{endpoint}/v3/table/create/test_db/t{i}/log", headers=td1(srv.master_key)
                )
                dropped = httpx.post(
                    f"{endpoint}/v3/table/delete/test_db/t{i}", headers=td1(srv.master_key)
                )
                answers.append((made.status_code, made.text, dropped.status_code, dropped.text))
        finally:
            stop.set()
        for writer in writers:
            writer.result()
    assert [a for a in answers if a[0] != 200 or a[2] != 200] == []
    srv.wait_for(
        "SELECT count(*) AS c FROM stream",
        lambda x: x[0]["c"] == sent,
        database="test_db",
        timeout=60,
    )
