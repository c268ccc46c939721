"""One account cannot read another's data through query jobs, whatever the SQL says.

Account 1 writes rows carrying a secret (some in Parquet files, the newest inlined in
the catalog) and causes an import error carrying it too; account 2 then issues every
trick we know through the REST API in its own database. Each job must fail, or succeed
without a trace of account 1: no secret, no database or table name of account 1's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port
from tests.e2e.restapi_support import td1, wait_job

SECRET = "s3cr3t-of-account-one"
THEIRS = "theirs"


@pytest.fixture(scope="module")
def two_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    port = free_port()
    srv = Server(Path(tmp_path_factory.mktemp("isolation")) / "data", ["--api-port", str(port)])
    srv.start(timeout=60)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # Enough rows for Parquet files, then a few that stay inlined in the catalog.
        for i in range(150):
            r = srv.postback(
                "test_db", "secret_events", {"v": f"{SECRET}-{i}", "n": i}, key=srv.write_key
            )
            assert r.status_code == 200, r.text
        srv.wait_for(
            "SELECT count(*) AS c FROM secret_events", lambda r: r[0]["c"] == 150, "test_db", 60
        )
        srv.postback("test_db", "secret_events", {"v": SECRET, "late": True}, key=srv.write_key)
        srv.postback("test_db", "secret_events", {"v": SECRET}, key="1/unknown")
        srv.wait_errors(lambda rows: any(SECRET in (r.get("record") or "") for r in rows))
        other = srv.cli("keys", "create", "--account", "2", "--type", "master").stdout.strip()
        r = httpx.post(f"{endpoint}/v3/database/create/{THEIRS}", headers=td1(other))
        assert r.status_code == 200, r.text
        srv.postback(THEIRS, "mine", {"v": "mine"}, key=other)
        srv.wait_for("SELECT count(*) AS c FROM mine", lambda r: r[0]["c"] == 1, THEIRS, 60)
        yield srv, endpoint, other
    finally:
        srv.kill()


def _attempts(data: Path) -> list[tuple[str, str]]:
    lake = data / "lake"
    files = f"{lake}/data/test_db/secret_events"
    presto = [
        "SELECT * FROM test_db.secret_events",
        "SELECT * FROM lake.test_db.secret_events",
        "SELECT * FROM secret_events",
        f'SELECT * FROM "{files}/*.parquet"',
        f"SELECT * FROM '{files}/*.parquet'",
        f'SELECT * FROM "{lake}/data/{THEIRS}/../test_db/secret_events/*.parquet"',
        f"SELECT * FROM read_parquet('{lake}/data/**/*.parquet')",
        f"SELECT * FROM parquet_scan('{files}/*.parquet')",
        f"SELECT * FROM glob('{data}/**')",
        f"SELECT * FROM sqlite_scan('{lake}/catalog.sqlite', 'ducklake_table')",
        f"SELECT * FROM read_text('{data}/control.sqlite')",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_schema",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_table",
        'SELECT * FROM "__ducklake_metadata_lake"."ducklake_inlined_data_tables"',
        "SELECT * FROM tdedge_system.import_errors",
        "SELECT * FROM lake.tdedge_system.import_errors",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_columns()",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.columns",
        "SELECT table_schema, table_name FROM lake.information_schema.tables",
        "SELECT * FROM query_table('test_db.secret_events')",
        "SELECT current_setting('allowed_directories') AS d",
        "WITH x AS (SELECT * FROM test_db.secret_events) SELECT * FROM x",
        "WITH secret_events AS (SELECT 1 AS a) SELECT * FROM test_db.secret_events",
        "SELECT (SELECT max(v) FROM test_db.secret_events) AS m",
        "SELECT * FROM mine UNION ALL SELECT v FROM test_db.secret_events",
    ]
    hive = [f"SELECT * FROM `{files}/*.parquet`", "SELECT * FROM `test_db`.`secret_events`"]
    return [("presto", q) for q in presto] + [("hive", q) for q in hive]


def test_no_job_of_another_account_finds_anything(two_accounts: tuple[Server, str, str]) -> None:
    srv, endpoint, other = two_accounts
    data = srv.data_dir.resolve()
    issued = []
    for engine, query in _attempts(data):
        r = httpx.post(
            f"{endpoint}/v3/job/issue/{engine}/{THEIRS}", data={"query": query}, headers=td1(other)
        )
        assert r.status_code == 200, r.text
        issued.append((query, str(r.json()["job_id"])))
    for query, job in issued:
        done = wait_job(endpoint, other, job)
        if done["status"] != "success":
            continue
        result = httpx.get(f"{endpoint}/v3/job/result/{job}?format=json", headers=td1(other))
        text = result.text
        assert SECRET not in text, query
        assert "test_db" not in text and "secret_events" not in text, (query, text[:500])


def test_the_account_still_reads_its_own_rows(two_accounts: tuple[Server, str, str]) -> None:
    _, endpoint, other = two_accounts
    r = httpx.post(
        f"{endpoint}/v3/job/issue/presto/{THEIRS}",
        data={"query": "SELECT v FROM mine"},
        headers=td1(other),
    )
    job = str(r.json()["job_id"])
    assert wait_job(endpoint, other, job)["status"] == "success"
    result = httpx.get(f"{endpoint}/v3/job/result/{job}?format=json", headers=td1(other))
    assert result.text.strip() == '["mine"]'


@pytest.mark.parametrize(
    "name",
    [
        "__ducklake_metadata_lake",
        "system",
        "main",
        "lake",
        "information_schema",
        "pg_catalog",
        "tdedge_system",
        "temp",
        "memory",
        "duckdb_x",
    ],
)
def test_names_of_the_engine_are_reserved(two_accounts: tuple[Server, str, str], name: str) -> None:
    srv, endpoint, other = two_accounts
    r = httpx.post(f"{endpoint}/v3/database/create/{name}", headers=td1(other))
    assert r.status_code == 400, r.text
    created = srv.cli("db", "create", name, check=False)
    assert created.returncode != 0


WRITES = [
    "INSERT INTO test_db.secret_events SELECT 'forged' AS v",
    "INSERT INTO lake.test_db.secret_events SELECT 'forged' AS v",
    "CREATE TABLE test_db.planted AS SELECT 'forged' AS v",
    "CREATE TABLE test_db.planted (v varchar)",
    "DELETE FROM test_db.secret_events",
    "DELETE FROM test_db.secret_events WHERE true",
    "INSERT INTO tdedge_system.import_errors SELECT 'forged' AS reason",
    "CREATE TABLE tdedge_system.planted AS SELECT 1 AS a",
    "SHOW TABLES FROM test_db",
    "DESCRIBE test_db.secret_events",
]


def test_no_job_of_another_account_writes_anything(two_accounts: tuple[Server, str, str]) -> None:
    srv, endpoint, other = two_accounts
    before = srv.query("SELECT count(*) AS c FROM secret_events", database="test_db")
    for query in WRITES:
        r = httpx.post(
            f"{endpoint}/v3/job/issue/presto/{THEIRS}", data={"query": query}, headers=td1(other)
        )
        assert r.status_code == 200, r.text
        done = wait_job(endpoint, other, str(r.json()["job_id"]))
        assert done["status"] == "error", query
    # Nor a result written into another account's table.
    r = httpx.post(
        f"{endpoint}/v3/job/issue/presto/{THEIRS}",
        data={"query": "SELECT 'forged' AS v", "result": "td://@/test_db/secret_events"},
        headers=td1(other),
    )
    assert r.status_code == 404, r.text
    assert srv.query("SELECT count(*) AS c FROM secret_events", database="test_db") == before
    assert srv.query("SHOW TABLES", database="test_db") == [{"name": "secret_events"}]
    assert all("forged" not in str(e) for e in srv.errors())


HEAVY = (
    "SELECT count(*) FROM UNNEST(sequence(1, 200000)) AS a(x) "
    "CROSS JOIN UNNEST(sequence(1, 200000)) AS b(y) WHERE x + y < 0"
)


def test_one_accounts_heavy_jobs_do_not_hold_every_slot(
    two_accounts: tuple[Server, str, str],
) -> None:
    srv, endpoint, other = two_accounts
    heavy = []
    for _ in range(3):
        r = httpx.post(
            f"{endpoint}/v3/job/issue/presto/{THEIRS}", data={"query": HEAVY}, headers=td1(other)
        )
        heavy.append(str(r.json()["job_id"]))
    try:
        r = httpx.post(
            f"{endpoint}/v3/job/issue/presto/test_db",
            data={"query": "SELECT 1"},
            headers=td1(srv.master_key),
        )
        light = str(r.json()["job_id"])
        assert wait_job(endpoint, srv.master_key, light, timeout=60)["status"] == "success"
        states = [
            httpx.get(f"{endpoint}/v3/job/status/{j}", headers=td1(other)).json()["status"]
            for j in heavy
        ]
        # None of account 2's jobs has ended, and only one of them has started.
        assert sorted(states) == ["queued", "queued", "running"], states
    finally:
        for job in heavy:
            httpx.post(f"{endpoint}/v3/job/kill/{job}", headers=td1(other))
