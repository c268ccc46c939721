"""Bulk imports' unique_ids per account, through the real server and td-client."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
import tdclient

from tdedge.control.keys import hash_key, key_id
from tests.e2e.conftest import Server
from tests.e2e.restapi_support import fluent_body, start_api_server

DAY = 1_700_006_400


@pytest.fixture
def api(make_server: Any) -> tuple[Server, str]:
    return start_api_server(make_server)


def start_loader(srv: Server) -> subprocess.Popen[str]:
    """The loader of a server started with --no-loader, run on its own."""
    out = (srv.data_dir.parent / "loader.log").open("a")
    cmd = [*srv.tdedge, "loader", "--data-dir", str(srv.data_dir)]
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)


def test_a_chunk_refused_whole_does_not_hold_its_unique_id(make_server: Any) -> None:
    """A key revoked after the edge answered: the loader refuses its chunk, and the same
    unique_id with a good key loads; a true repeat is dropped, and says so."""
    srv, endpoint = start_api_server(make_server, "--no-loader")
    master = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    master.create_database("web")
    writer_key = srv.cli("keys", "create", "--type", "write").stdout.strip()
    writer = tdclient.Client(apikey=writer_key, endpoint=endpoint)
    body = fluent_body([{"time": DAY, "n": 1}, {"time": DAY + 1, "n": 2}])
    writer.api.import_data("web", "t", "msgpack.gz", body, len(body), "chunk-1")
    srv.cli("keys", "revoke", key_id(hash_key(writer_key)))
    # The retry with a good key of the same account, then a true repeat of it.
    master.api.import_data("web", "t", "msgpack.gz", body, len(body), "chunk-1")
    master.api.import_data("web", "t", "msgpack.gz", body, len(body), "chunk-1")
    loader = start_loader(srv)
    try:
        errs = srv.wait_errors(lambda es: len(es) == 3, timeout=60)
        assert srv.query("SELECT n FROM t ORDER BY n", database="web") == [{"n": 1}, {"n": 2}]
    finally:
        loader.terminate()
        loader.wait(timeout=30)
    assert sorted(e["reason"] for e in errs) == ["duplicate_upload", "revoked_key", "revoked_key"]
    [dup] = [e for e in errs if e["reason"] == "duplicate_upload"]
    assert "chunk-1" in dup["detail"] and "2 records" in dup["detail"]
    assert dup["account_id"] == 1 and dup["record"] == ""


def test_two_accounts_uploading_one_unique_id_both_land(api: tuple[Server, str]) -> None:
    """Account 1's table is gone and account 2 made one of the same name: account 2's
    upload is its own, whatever account 1 uploaded under that id."""
    srv, endpoint = api
    first = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    first.create_database("shared")
    body = fluent_body([{"time": DAY, "who": "first"}])
    first.api.import_data("shared", "t", "msgpack.gz", body, len(body), "same-id")
    srv.wait_for("SELECT who FROM t", lambda r: r == [{"who": "first"}], database="shared")
    first.api.delete_database("shared")

    second_key = srv.cli("keys", "create", "--account", "2", "--type", "master").stdout.strip()
    second = tdclient.Client(apikey=second_key, endpoint=endpoint)
    second.create_database("shared")
    # The loader trusts its cache of database owners for key_cache_ttl_s (5 s): until
    # then it would still take "shared" for account 1's, and refuse account 2's rows.
    time.sleep(6)
    body = fluent_body([{"time": DAY, "who": "second"}])
    second.api.import_data("shared", "t", "msgpack.gz", body, len(body), "same-id")
    srv.wait_for("SELECT who FROM t", lambda r: r == [{"who": "second"}], database="shared")
    assert not [e for e in srv.errors() if e["reason"] == "duplicate_upload"]
