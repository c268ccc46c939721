"""TD's Bulk Import API through the real server, called as td-client and pytd call it:
one call at a time, its failures, kills of the server between the steps, and a
DataFrame written by pytd's bulk_import writer and read back."""

from __future__ import annotations

import io
import os
import sqlite3
import time
from typing import Any

import httpx
import msgpack
import numpy as np
import pandas as pd
import pytd
import pytest
import tdclient
from tdclient import errors

from tests.e2e.conftest import Server, wait_healthy
from tests.e2e.restapi_support import fluent_body, start_api_server, td1

DAY = 1_700_006_400  # 2023-11-15 00:00:00 UTC


@pytest.fixture
def api(make_server: Any) -> tuple[Server, str]:
    return start_api_server(
        make_server, "--bulk-part-max-bytes", "200000", "--bulk-account-max-bytes", "250000"
    )


@pytest.fixture
def client(api: tuple[Server, str]) -> tdclient.Client:
    srv, endpoint = api
    return tdclient.Client(apikey=srv.master_key, endpoint=endpoint)


def events(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"time": DAY + i, "n": i, "s": f"v{i}"} for i in range(start, start + n)]


def count(srv: Server, table: str) -> int:
    rows = srv.query(f"SELECT count(*) AS c FROM {table}", database="web")
    return int(rows[0]["c"])


def performed(bi: Any) -> Any:
    """Freeze and perform ``bi`` as td-client users do; the perform's job."""
    bi.freeze()
    return bi.perform(wait=True, wait_interval=1, timeout=60)


def test_a_session_call_by_call(client: tdclient.Client, api: tuple[Server, str]) -> None:
    srv, _ = api
    client.create_database("web")
    client.create_log_table("web", "events")
    bi = client.create_bulk_import("sess_1", "web", "events")
    bi.update()
    assert (bi.status, bi.upload_frozen, bi.database, bi.table) == (
        "uploading",
        False,
        "web",
        "events",
    )
    good = fluent_body(events(100))
    bi.upload_part("part-0", good, len(good))
    # A CSV file through td-client's file helper: converted to gzipped msgpack by the
    # client (the API never sees CSV). Its second row has no time: an error record.
    csv = b"time,n,s\n" + f"{DAY + 100},100,v100\n,101,v101\n{DAY + 102},102,v102\n".encode()
    bi.upload_file("part-1", "csv", io.BytesIO(csv))
    junk = fluent_body([{"time": DAY, "n": -1}])
    bi.upload_part("part-2", junk, len(junk))
    bi.upload_part("part-2", junk, len(junk))  # uploaded again: replaced, not added
    bi.delete_part("part-2")
    assert sorted(bi.list_parts()) == ["part-0", "part-1"]
    # Unfrozen, a frozen session takes parts again.
    bi.freeze()
    assert bi.upload_frozen
    bi.unfreeze()
    assert not bi.upload_frozen
    late = fluent_body([{"time": DAY + 200, "n": 200, "s": "v200"}, {"n": 201}, {"time": "soon"}])
    bi.upload_part("part-3", late, len(late))

    job = performed(bi)
    assert job.success()
    assert (bi.status, bi.valid_records, bi.error_records) == ("ready", 103, 3)
    assert (bi.valid_parts, bi.error_parts, bi.job_id) == (3, 0, job.id)
    shown = client.job(job.id)
    assert (shown.type, shown.status(), shown.database) == ("bulk_import", "success", "web")
    assert job.id in {j.job_id for j in client.jobs()}
    assert list(bi.error_record_items()) == [
        {"n": 101, "s": "v101", "time": None},
        {"n": 201},
        {"time": "soon"},
    ]
    assert count(srv, "events") == 0  # nothing lands before the commit

    bi.commit(wait=True, wait_interval=1, timeout=60)
    assert bi.status == "committed"
    assert count(srv, "events") == 103
    ns = [r["n"] for r in srv.query("SELECT n FROM events ORDER BY n", database="web")]
    assert ns == [*range(101), 102, 200]
    refused = [e for e in srv.errors() if e["door"] == "bulk_import"]
    assert sorted(e["reason"] for e in refused) == ["time_invalid", "time_missing", "time_missing"]
    assert {"sess_1"} == {b.name for b in client.bulk_imports()}
    assert client.bulk_import("sess_1").status == "committed"
    bi.commit()  # again: committed already, nothing journaled
    bi.delete()
    with pytest.raises(errors.NotFoundError):
        client.bulk_import("sess_1")
    time.sleep(1.5)  # a second copy would have landed by now
    assert count(srv, "events") == 103


def test_refusals(client: tdclient.Client, api: tuple[Server, str]) -> None:
    srv, endpoint = api
    client.create_database("web")
    client.create_log_table("web", "events")
    body = fluent_body(events(3))
    # Unknown session, every call.
    for call in (
        lambda: client.bulk_import("nope"),
        lambda: client.bulk_import_upload_part("nope", "p", body, len(body)),
        lambda: client.list_bulk_import_parts("nope"),
        lambda: client.bulk_import_delete_part("nope", "p"),
        lambda: client.freeze_bulk_import("nope"),
        lambda: client.unfreeze_bulk_import("nope"),
        lambda: client.perform_bulk_import("nope"),
        lambda: client.commit_bulk_import("nope"),
        lambda: list(client.bulk_import_error_records("nope")),
        lambda: client.delete_bulk_import("nope"),
    ):
        with pytest.raises(errors.NotFoundError):
            call()
    # Creating: where to, and under which name.
    with pytest.raises(errors.NotFoundError, match=r"nowhere"):
        client.create_bulk_import("sess_x", "nowhere", "events")
    with pytest.raises(errors.NotFoundError, match=r"web.missing"):
        client.create_bulk_import("sess_x", "web", "missing")
    with pytest.raises(errors.APIError, match=r"400.*invalid_name"):
        client.create_bulk_import("ab", "web", "events")
    bi = client.create_bulk_import("sess_1", "web", "events")
    with pytest.raises(errors.AlreadyExistsError):
        client.create_bulk_import("sess_1", "web", "events")
    # Out of order.
    bi.upload_part("p1", body, len(body))
    with pytest.raises(errors.APIError, match=r"422.*session_not_frozen"):
        client.perform_bulk_import("sess_1")
    with pytest.raises(errors.APIError, match=r"422.*session_not_performed"):
        client.commit_bulk_import("sess_1")
    with pytest.raises(errors.APIError, match=r"422.*session_not_performed"):
        list(client.bulk_import_error_records("sess_1"))
    bi.freeze()
    with pytest.raises(errors.APIError, match=r"422.*session_frozen"):
        bi.upload_part("p2", body, len(body))
    with pytest.raises(errors.APIError, match=r"422.*session_frozen"):
        bi.delete_part("p1")
    bi.unfreeze()
    with pytest.raises(errors.NotFoundError):
        client.bulk_import_delete_part("sess_1", "p9")
    # Bad parts: refused on upload with their reason, each leaving an import error.
    for part, bad, code in [
        ("b1", b"\x1f\x8b\x08 not gzip", "400.*invalid_gzip"),
        ("b2", msgpack.packb([1, 2]), "400.*not_an_object"),
        ("b3", b"\x00" * 200_001, "413"),
    ]:
        with pytest.raises(errors.APIError, match=code):
            client.bulk_import_upload_part("sess_1", part, bad, len(bad))
    with pytest.raises(errors.APIError, match=r"400.*invalid_name"):
        client.bulk_import_upload_part("sess_1", "a b", body, len(body))
    # The account's parts on disk are bounded: 150 kB fits once, not twice.
    wide = fluent_body({"time": DAY, "r": os.urandom(50).hex()} for _ in range(2500))
    assert 140_000 < len(wide) < 200_000
    client.bulk_import_upload_part("sess_1", "w1", wide, len(wide))
    client.bulk_import_upload_part("sess_1", "w1", wide, len(wide))  # replaced, not added
    with pytest.raises(errors.ForbiddenError, match="bulk_storage_limit"):
        client.bulk_import_upload_part("sess_1", "w2", wide, len(wide))
    client.bulk_import_delete_part("sess_1", "w1")
    assert client.list_bulk_import_parts("sess_1") == ["p1"]
    srv.wait_errors(
        lambda errs: (
            {"invalid_gzip", "not_an_object"}
            <= {e["reason"] for e in errs if e["door"] == "bulk_import"}
        )
    )
    # Keys: a wrong one is 401, a write key 403, another account sees nothing.
    wrong = tdclient.Client(apikey="1/not-a-key", endpoint=endpoint)
    with pytest.raises(errors.AuthError):
        wrong.bulk_import("sess_1")
    writer = tdclient.Client(apikey=srv.write_key, endpoint=endpoint)
    with pytest.raises(errors.ForbiddenError):
        writer.create_bulk_import("sess_w", "web", "events")
    with pytest.raises(errors.ForbiddenError):
        writer.bulk_import_upload_part("sess_1", "p2", body, len(body))
    other_key = srv.cli("keys", "create", "--account", "2", "--type", "master").stdout.strip()
    other = tdclient.Client(apikey=other_key, endpoint=endpoint)
    with pytest.raises(errors.NotFoundError):
        other.bulk_import("sess_1")
    with pytest.raises(errors.NotFoundError):
        other.bulk_import_upload_part("sess_1", "p2", body, len(body))
    with pytest.raises(errors.NotFoundError):
        other.create_bulk_import("sess_2", "web", "events")
    assert other.bulk_imports() == []
    # Raw HTTP: the method matters, and the key is required.
    r = httpx.get(f"{endpoint}/v3/bulk_import/commit/sess_1", headers=td1(srv.master_key))
    assert r.status_code == 405
    assert httpx.get(f"{endpoint}/v3/bulk_import/list").status_code == 401


def restarted(srv: Server, *extra: str) -> Server:
    """The same data dir and ports served again, with ``extra`` options instead."""
    again = Server(srv.data_dir, [*srv.extra[:2], *extra])
    again.port, again.url = srv.port, srv.url
    again.master_key, again.write_key = srv.master_key, srv.write_key
    again.start()
    return again


def start(srv: Server, endpoint: str) -> None:
    """Start ``srv`` again and wait for its api port, which opens after the main one."""
    srv.start()
    wait_healthy(endpoint)


def test_sessions_survive_kills_and_a_commit_loads_once(make_server: Any) -> None:
    # Without a loader the journaled commits wait in the journal, whatever the timing.
    srv, endpoint = start_api_server(make_server, "--no-loader")
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    client.create_database("web")
    client.create_log_table("web", "events")
    bi = client.create_bulk_import("sess_1", "web", "events")
    for i in range(3):
        part = fluent_body(events(1000, start=1000 * i))
        bi.upload_part(f"part-{i}", part, len(part))
    performed(bi)

    # Killed between perform and commit: the session and its parts are all there.
    srv.kill()
    start(srv, endpoint)
    bi = client.bulk_import("sess_1")
    assert (bi.status, bi.valid_records) == ("ready", 3000)
    assert sorted(bi.list_parts()) == ["part-0", "part-1", "part-2"]
    client.commit_bulk_import("sess_1")
    client.commit_bulk_import("sess_1")  # a retry after the 200: nothing journaled again
    srv.kill()

    # As if killed after journaling the commit but before recording that it had (the
    # flag is cleared while the server is down): the next commit journals it again.
    with sqlite3.connect(srv.data_dir / "bulk_sessions.sqlite") as db:
        db.execute("UPDATE bulk_sessions SET published = 0")
    start(srv, endpoint)
    assert client.bulk_import("sess_1").status == "committing"
    client.commit_bulk_import("sess_1")
    srv.kill()

    # Two copies in the journal; the loader loads one.
    loaded = restarted(srv)
    try:
        wait_healthy(endpoint)
        bi = client.bulk_import("sess_1")
        bi.commit(wait=True, wait_interval=1, timeout=60)
        assert bi.status == "committed"
        assert count(loaded, "events") == 3000
        rows = loaded.query("SELECT count(DISTINCT n) AS d FROM events", database="web")
        assert rows[0]["d"] == 3000
        errs = loaded.wait_errors(lambda e: any(x["reason"] == "duplicate_upload" for x in e))
        dropped = [e for e in errs if e["reason"] == "duplicate_upload"]
        assert len(dropped) == 1 and "these 3000 records" in dropped[0]["detail"]
        time.sleep(1.5)  # a second copy would have landed by now
        assert count(loaded, "events") == 3000
    finally:
        loaded.kill()


def frame(n: int) -> pd.DataFrame:
    i = np.arange(n, dtype="int64")
    return pd.DataFrame(
        {
            "i": i,
            "f": i / 7,
            "s": [f"row {k}" for k in range(n)],
            "ni": pd.array([None if k % 3 == 0 else k for k in range(n)], dtype="Int64"),
            "nf": [None if k % 4 == 0 else k / 3 for k in range(n)],
            "ns": [None if k % 5 == 0 else f"x{k}" for k in range(n)],
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(i, unit="s"),
            "time": DAY + i % 86_400,
        }
    )


@pytest.mark.parametrize("fmt", ["msgpack", "csv"])
def test_pytd_writes_a_dataframe_and_reads_it_back(make_server: Any, fmt: str) -> None:
    srv, endpoint = start_api_server(make_server)
    n = 100_000
    tdclient.Client(apikey=srv.master_key, endpoint=endpoint).create_database("web")
    pc = pytd.Client(apikey=srv.master_key, endpoint=endpoint, database="web")
    try:
        sent = frame(n)
        pc.load_table_from_dataframe(
            sent.copy(), "web.frame", writer="bulk_import", if_exists="overwrite", fmt=fmt
        )
        got = pc.query(
            "SELECT i, f, s, ni, nf, ns, ts, time FROM frame ORDER BY i",
            force_tdclient=True,
            wait_interval=1,
        )
    finally:
        pc.close()
    assert got["columns"] == ["i", "f", "s", "ni", "nf", "ns", "ts", "time"]
    rows = got["data"]
    assert len(rows) == n
    expected = [
        [
            k,
            k / 7,
            f"row {k}",
            None if k % 3 == 0 else k,
            None if k % 4 == 0 else k / 3,
            None if k % 5 == 0 else f"x{k}",
            str(pd.Timestamp("2024-01-01") + pd.Timedelta(seconds=k)),
            DAY + k % 86_400,
        ]
        for k in range(n)
    ]
    assert rows == expected
    # pytd deletes its session once committed.
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    assert client.bulk_imports() == []
