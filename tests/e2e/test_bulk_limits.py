"""Bulk imports against hostile sizes, and their unique_ids per account, through the
real server (td-client where a client would use it)."""

from __future__ import annotations

import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import tdclient

from tdedge.control.keys import hash_key, key_id
from tests.e2e.conftest import Server
from tests.e2e.restapi_support import fluent_body, start_api_server, td1

DAY = 1_700_006_400
MIB = 1024 * 1024


@pytest.fixture
def api(make_server: Any) -> tuple[Server, str]:
    return start_api_server(make_server)


def gzip_stream(head: bytes, filler: bytes, size: int, tail: bytes = b"") -> bytes:
    """gzip of ``head``, then ``filler`` repeated to ``size`` bytes, then ``tail``,
    compressed a MiB at a time: a small body that inflates to ``size``."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [deflate.compress(head)]
    block = filler * (MIB // len(filler))
    for _ in range(size // len(block)):
        out.append(deflate.compress(block))
    out.append(deflate.compress(tail))
    out.append(deflate.flush())
    return b"".join(out)


def group_processes(srv: Server) -> Iterator[tuple[int, str]]:
    """(pid, command line) of every process of the server's process group."""
    assert srv.proc is not None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        # The process group is the fifth field, after the parenthesised name.
        if int(stat.rpartition(")")[2].split()[2]) == srv.proc.pid:
            yield int(entry), cmdline.decode(errors="replace")


def peak_rss_mib(srv: Server, role: str) -> float:
    """The largest resident set any of the server's ``role`` processes ever had."""
    peaks = []
    for pid, cmdline in group_processes(srv):
        if f" {role}" not in cmdline:
            continue
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    assert peaks, f"no {role} process in the server's group"
    return max(peaks)


def put(endpoint: str, key: str, path: str, body: bytes) -> httpx.Response:
    return httpx.put(f"{endpoint}{path}", content=body, headers=td1(key), timeout=120)


def test_uploads_that_inflate_too_far_cost_the_server_little(api: tuple[Server, str]) -> None:
    srv, endpoint = api
    # Half a MiB that inflates past the 512 MiB cap: refused before anything is decoded.
    bomb = gzip_stream(b"", b"\0", 600 * MIB)
    assert len(bomb) < MIB
    started = time.monotonic()
    r = put(endpoint, srv.master_key, "/v3/table/import/web/bomb/msgpack.gz", bomb)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "body_too_large"
    assert time.monotonic() - started < 60  # generous: a second or two of zlib here

    # One 400 MB record in ~400 KB, between two small ones, under the upload cap: it is
    # walked past without being held, and becomes an import error; its neighbours load.
    head = msgpack.packb({"time": DAY, "n": 0}) + b"\x82\xa4time\xce" + DAY.to_bytes(4, "big")
    head += b"\xa1v\xdb" + (400 * MIB).to_bytes(4, "big")
    one_record = gzip_stream(head, b"x", 400 * MIB, msgpack.packb({"time": DAY, "n": 2}))
    assert len(one_record) < MIB
    started = time.monotonic()
    r = put(endpoint, srv.master_key, "/v3/table/import/web/bomb/msgpack.gz", one_record)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 60
    srv.wait_for(
        "SELECT n FROM bomb ORDER BY n", lambda r: r == [{"n": 0}, {"n": 2}], database="web"
    )
    errs = srv.wait_errors(lambda es: len([e for e in es if e["table_name"] == "bomb"]) == 2)
    refused = sorted((e["reason"], e["record"]) for e in errs if e["table_name"] == "bomb")
    assert refused[0][0] == "body_too_large" and '"body_bytes":' in refused[0][1]
    header = 18  # the map, "time" and its value, "v" and the string's length
    assert refused[1] == ("record_too_large", f'{{"msgpack_bytes":{400 * MIB + header}}}')

    # Neither upload was ever held: the api worker's and the loader's peaks stay small.
    for role, bound in (("listen", 400), ("loader", 1024)):
        peak = peak_rss_mib(srv, role)
        print(f"peak resident set of the {role} process: {peak:.0f} MiB")
        assert peak < bound, f"the {role} process peaked at {peak:.0f} MiB"


def test_an_oversize_record_is_an_import_error_and_its_neighbours_load(
    api: tuple[Server, str],
) -> None:
    srv, endpoint = api
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    # Over 1 MiB as JSON (a control character is six bytes escaped), and over 1 MiB
    # as msgpack.
    as_json = {"time": DAY + 1, "n": 1, "ctl": "\x01" * (MIB // 5)}
    as_msgpack = {"time": DAY + 3, "n": 3, "blob": "y" * 3 * MIB}
    records: list[dict[str, Any]] = [
        {"time": DAY, "n": 0},
        as_json,
        {"time": DAY + 2, "n": 2},
        as_msgpack,
    ]
    body = fluent_body(records)
    client.api.import_data("web", "mixed", "msgpack.gz", body, len(body), "u-mixed")
    srv.wait_for(
        "SELECT n FROM mixed ORDER BY n", lambda r: r == [{"n": 0}, {"n": 2}], database="web"
    )
    errs = srv.wait_errors(
        lambda es: len([e for e in es if e["reason"] == "record_too_large"]) == 2
    )
    too_large = sorted(
        (e for e in errs if e["reason"] == "record_too_large"), key=lambda e: e["record"]
    )
    assert [(e["table_name"], e["door"]) for e in too_large] == [("mixed", "import")] * 2
    # The first 64 KiB of the one that was decoded; the size of the one walked past.
    assert too_large[0]["record"] == f'{{"msgpack_bytes":{len(msgpack.packb(as_msgpack))}}}'
    assert too_large[1]["record"].startswith('{"time":1700006401,"n":1,"ctl":"\\u0001')
    assert len(too_large[1]["record"]) == 64 * 1024


def test_a_large_upload_streams_through_in_parts_and_loads_once(
    api: tuple[Server, str],
) -> None:
    """~12 MB of records: several journal parts, published whole; a retry adds nothing."""
    srv, endpoint = api
    client = tdclient.Client(apikey=srv.master_key, endpoint=endpoint)
    n = 30_000
    body = fluent_body({"time": DAY + i, "i": i, "pad": "p" * 400} for i in range(n))
    for _ in range(2):
        client.api.import_data("web", "large", "msgpack.gz", body, len(body), "u-large")
    srv.wait_for(
        "SELECT count(*) AS c, count(DISTINCT i) AS d FROM large",
        lambda r: r == [{"c": n, "d": n}],
        database="web",
        timeout=120,
    )
    time.sleep(1.5)  # a second copy would have landed by now
    assert srv.query("SELECT count(*) AS c FROM large", database="web") == [{"c": n}]


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
