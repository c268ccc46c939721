"""``tdedge table retention``, ``tdedge table drop`` and ``tdedge db drop`` against a
running server: drops ask first, take the REST API's path, and forget retentions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Server
from tests.e2e.restapi_support import start_api_server, td1


def table_cli(srv: Server, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tdedge",
            "table",
            args[0],
            "--data-dir",
            str(srv.data_dir),
            *args[1:],
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def parquet_files(srv: Server, database: str, table: str) -> set[Path]:
    return set((srv.data_dir / "lake" / "data" / database / table).glob("*.parquet"))


def tables(endpoint: str, key: str, database: str) -> set[str]:
    r = httpx.get(f"{endpoint}/v3/table/list/{database}", headers=td1(key), timeout=60)
    assert r.status_code == 200, r.text
    return {t["name"] for t in r.json()["tables"]}


def test_retention_and_drops_from_the_cli(make_server: Any) -> None:
    srv, endpoint = start_api_server(make_server)
    for table in ("keep", "gone", "rest"):
        assert srv.postback("test_db", table, {"a": 1}, key=srv.write_key).status_code == 200
    srv.wait_for(
        "SELECT (SELECT count(*) FROM test_db.keep) + (SELECT count(*) FROM test_db.gone) "
        "+ (SELECT count(*) FROM test_db.rest) AS n",
        lambda r: r[0]["n"] == 3,
    )

    done = table_cli(srv, "retention", "test_db", "keep", "--days", "7")
    assert done.returncode == 0, done.stderr
    assert "test_db.keep keeps 7 days" in done.stdout
    for table in ("gone", "rest"):
        assert table_cli(srv, "retention", "test_db", table, "--days", "3").returncode == 0
    assert table_cli(srv, "retention", "test_db", "keep").stdout.strip() == "test_db.keep: 7 days"
    assert table_cli(srv, "retention", "test_db", "keep", "--days", "0").returncode != 0
    done = table_cli(srv, "retention", "nope_db", "keep", "--days", "1")
    assert done.returncode != 0 and "database nope_db does not exist" in done.stderr

    # Asked first: "n" keeps the table.
    done = table_cli(srv, "drop", "test_db", "gone", stdin="n\n")
    assert done.returncode != 0 and "Drop table test_db.gone and its 1 rows?" in done.stdout
    assert "gone" in tables(endpoint, srv.master_key, "test_db")
    done = table_cli(srv, "drop", "test_db", "gone", stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert tables(endpoint, srv.master_key, "test_db") == {"keep", "rest"}
    assert table_cli(srv, "drop", "test_db", "gone", "--yes").returncode != 0  # gone already

    # The REST API's delete forgets the retention too: one path for both.
    r = httpx.post(f"{endpoint}/v3/table/delete/test_db/rest", headers=td1(srv.master_key))
    assert r.status_code == 200, r.text
    listed = table_cli(srv, "retention").stdout.strip().splitlines()
    assert listed == ["test_db.keep: 7 days"]

    # Asked first: "n" keeps the database.
    done = srv.cli("db", "drop", "test_db", check=False, stdin="n\n")
    assert done.returncode != 0
    assert "Drop database test_db, its 1 tables and 1 rows?" in done.stdout, done.stdout
    assert tables(endpoint, srv.master_key, "test_db") == {"keep"}
    done = srv.cli("db", "drop", "test_db", "--yes")
    assert "dropped database test_db" in done.stdout
    r = httpx.get(f"{endpoint}/v3/database/list", headers=td1(srv.master_key))
    assert [d["name"] for d in r.json()["databases"]] == []
    assert "every table keeps every row" in table_cli(srv, "retention").stdout
    done = srv.cli("db", "drop", "test_db", "--yes", check=False)
    assert done.returncode != 0 and "does not exist" in done.stderr
    done = srv.cli("db", "drop", "tdedge_system", "--yes", check=False)
    assert done.returncode != 0 and "keeps for itself" in done.stderr

    # Records keep arriving after a drop: the database and table are made again.
    assert srv.postback("test_db", "keep", {"a": 2}, key=srv.master_key).status_code == 200
    srv.wait_for("SELECT a FROM test_db.keep", lambda r: r == [{"a": 2}])


def test_retention_deletes_old_rows_and_their_files_leave_the_disk(make_server: Any) -> None:
    srv = make_server(["--compaction-interval", "0.5", "--snapshot-retention", "1"])
    old = int(time.time()) - 30 * 86400
    for i in range(3):
        r = srv.postback("test_db", "visits", {"time": old, "i": i}, key=srv.write_key)
        assert r.status_code == 200
    srv.wait_for("SELECT count(*) AS n FROM test_db.visits", lambda r: r[0]["n"] == 3)
    deadline = time.monotonic() + 30
    while not (old_files := parquet_files(srv, "test_db", "visits")):  # flushed by compaction
        assert time.monotonic() < deadline, "the rows never left the catalog for a file"
        time.sleep(0.2)

    assert table_cli(srv, "retention", "test_db", "visits", "--days", "7").returncode == 0
    assert srv.postback("test_db", "visits", {"i": 9}, key=srv.write_key).status_code == 200
    srv.wait_for("SELECT i FROM test_db.visits", lambda r: r == [{"i": 9}])
    # The expired snapshots took the files of the old rows with them.
    deadline = time.monotonic() + 30
    while old_files & parquet_files(srv, "test_db", "visits"):
        assert time.monotonic() < deadline, f"still on disk: {old_files}"
        time.sleep(0.2)
    assert srv.query("SELECT i FROM test_db.visits") == [{"i": 9}]
