"""The p13n engine through the real server: exact counts under concurrent requests from
two worker processes, merges, the 429s and the 500s of a store that is down."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.e2e.p13n_support import CONFIG, P13n, start


def ready(
    make_server: Any, tmp_path: Path, extra: list[str] | None = None, config: str = CONFIG
) -> P13n:
    p = start(make_server, extra)
    p.server.cli("db", "create", "retail")
    p.apply(config, tmp_path)
    p.token("web", "web")
    return p


def code(r: httpx.Response) -> tuple[int, int]:
    body = r.json()
    assert set(body) == {"code", "message"}, body
    return r.status_code, body["code"]


@pytest.mark.parametrize("engine", ["process", "inline"])
def test_no_lost_updates_with_two_workers(make_server: Any, tmp_path: Path, engine: str) -> None:
    """400 events for one person from 16 clients at once, served by two worker processes
    (the engine in its own process, or inside each worker): the profile counts every one
    of them."""
    p = ready(make_server, tmp_path, ["--workers", "2", "--p13n-engine", engine])
    n = 400

    def send(i: int) -> tuple[int, str]:
        event = {"td_client_id": "same-person", "amount": 1}
        if i % 3 == 0:
            event["email"] = "same@example.com"  # stitched to the same profile
        r = p.post(event, path="/retail/purchases")
        return r.status_code, "" if r.status_code == 200 else r.text

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(n)))
    assert [status for status, _ in answers] == [200] * n, {body for _, body in answers if body}
    profile = p.profile("email=same@example.com")
    assert profile["events"] == n
    assert profile["attributes"]["visits"] == n
    assert profile["attributes"]["total_spend"] == n
    assert profile["keys"] == {"td_client_id": ["same-person"], "email": ["same@example.com"]}
    rows = p.server.wait_for(
        "SELECT count(*) AS n FROM retail.purchases", lambda r: r[0]["n"] == n, timeout=120
    )
    assert rows[0]["n"] == n  # and every event is stored in its table


def test_merges_are_logged_and_queryable(make_server: Any, tmp_path: Path) -> None:
    p = ready(make_server, tmp_path)
    assert (
        p.post({"td_client_id": "device-1", "amount": 3}, path="/retail/purchases").status_code
        == 200
    )
    assert (
        p.post({"email": "me@example.com", "amount": 4}, path="/retail/purchases").status_code
        == 200
    )
    first = p.profile("td_client_id=device-1")
    second = p.profile("email=me@example.com")
    assert first["id"] != second["id"]
    both = {"td_client_id": "device-1", "email": "me@example.com", "amount": 5}
    assert p.post(both, path="/retail/purchases").status_code == 200
    merged = p.profile("email=me@example.com")
    assert merged["id"] == first["id"]  # the older profile survives
    assert merged["attributes"]["total_spend"] == 12
    assert merged["keys"] == {"td_client_id": ["device-1"], "email": ["me@example.com"]}
    assert [m["merged_profile"] for m in merged["merges"]] == [second["id"]]
    log = msgspec.json.decode(
        p.server.cli("p13n", "merges", "--service", "web", "--format", "json").stdout
    )
    assert [(m["survivor"], m["merged"], m["keys"]) for m in log] == [
        (first["id"], second["id"], ["email=me@example.com"])
    ]


def test_429_over_the_throughput_limit(make_server: Any, tmp_path: Path) -> None:
    p = ready(make_server, tmp_path, config=CONFIG + "limits: {events_per_second: 1}\n")
    answers = [p.post({"email": "a@b"}) for _ in range(5)]  # well within 5 s on any machine
    assert answers[0].status_code == 200
    refused = [a for a in answers if a.status_code != 200]
    assert refused, [a.status_code for a in answers]
    assert {code(a) for a in refused} == {(429, 2003)}
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)


def test_429_over_the_concurrency_limit(make_server: Any, tmp_path: Path) -> None:
    p = ready(make_server, tmp_path, config=CONFIG + "limits: {concurrency: 1}\n")
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: p.post({"email": f"c{i}@b"}), range(96)))
    refused = [a for a in answers if a.status_code == 429]
    assert {a.status_code for a in answers} <= {200, 429}
    assert refused and any(a.status_code == 200 for a in answers)
    assert {code(a) for a in refused} == {(429, 2013)}
    assert all(a.headers["retry-after"] == "1" for a in refused)


@contextmanager
def renamed(db: Path, table: str) -> Iterator[None]:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        conn.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        conn.close()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_500_when_a_store_is_down(make_server: Any, tmp_path: Path, engine: str) -> None:
    p = ready(
        make_server,
        tmp_path,
        ["--p13n-engine", engine],
        config=CONFIG + "limits: {store_timeout_ms: 300}\n",
    )
    data = p.server.data_dir
    assert p.post({"email": "up@b"}).status_code == 200

    # 1002: the profile store's write lock held past the store timeout.
    holder = sqlite3.connect(data / "p13n" / "profiles.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert code(p.post({"email": "up@b"})) == (500, 1002)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert p.post({"email": "up@b"}).status_code == 200

    # 1003: the batch segment store cannot be read.
    with renamed(data / "p13n" / "batch.sqlite", "facts"):
        time.sleep(0.3)  # workers notice a changed batch store within 100 ms
        assert code(p.post({"email": "up@b"})) == (500, 1003)
    assert p.post({"email": "up@b"}).status_code == 200

    # 1004: the configuration store cannot be read. Tokens the worker knows keep working
    # from its cache; a token it has not seen yet must be looked up, and cannot be.
    fresh = p.token("fresh", "web")
    with renamed(data / "control.sqlite", "p13n_tokens"):
        assert p.post({"email": "up@b"}).status_code == 200
        assert code(p.post({"email": "up@b"}, token=fresh)) == (500, 1004)
    eventually(lambda: p.post({"email": "up@b"}, token=fresh).status_code == 200)

    # 1005: the API key directory cannot be read (a key not in the cache is looked up).
    unknown_key = f"1/{secrets.token_hex(20)}"
    with renamed(data / "control.sqlite", "api_keys"):
        assert code(p.post({"email": "up@b"}, key=unknown_key)) == (500, 1005)
    assert code(p.post({"email": "up@b"}, key=unknown_key)) == (401, 401)


def test_503_when_the_journal_refuses(make_server: Any, tmp_path: Path) -> None:
    """1001: the event cannot be made durable (here: the backlog bound, with no loader),
    so nothing is answered 200 and the profile is not touched."""
    p = ready(make_server, tmp_path, ["--journal-max-backlog", "1", "--no-loader"])
    assert p.post({"email": "j@b"}).status_code == 200
    time.sleep(1.0)  # the journal checks its backlog twice a second
    refused = p.post({"email": "j@b"})
    assert code(refused) == (503, 1001)
    assert "retry-after" in refused.headers
    assert p.profile("email=j@b")["events"] == 1


def test_a_broken_p13n_store_leaves_the_other_doors_alone(make_server: Any, tmp_path: Path) -> None:
    """The p13n stores open on the first p13n request: if they cannot, that door answers
    500 and the worker keeps serving the Postback API."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "p13n").write_text("a file where the p13n folder should be")
    p = start(make_server, data_dir=data)
    p.server.cli("db", "create", "retail")
    p.apply(CONFIG, tmp_path)
    p.token("web", "web")
    assert code(p.post({"email": "a@b"})) == (500, 1002)
    assert p.server.postback("retail", "kept", {"a": 1}, key=p.server.write_key).status_code == 200
    assert code(p.post({"email": "a@b"})) == (500, 1002)


def engine_pid(p: P13n) -> int:
    """The pid of the server's p13n engine process."""
    assert p.server.proc is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == p.server.proc.pid and b"engine" in argv:
            return int(entry.name)
    raise AssertionError("no engine process")


def test_a_killed_engine_restarts_and_no_event_is_lost(make_server: Any, tmp_path: Path) -> None:
    """kill -9 of the engine: requests meanwhile answer 500 1002 (their events are stored
    all the same) and /readyz says why, the supervisor starts a new engine, and answers
    are 200 again."""
    p = ready(
        make_server,
        tmp_path,
        ["--p13n-engine", "process"],
        config=CONFIG + "limits: {store_timeout_ms: 300}\n",
    )
    statuses = [p.post({"email": "k@b"}).status_code]
    # Ready once every background process has beaten, which on a busy machine can come
    # after the first answer.
    eventually(lambda: httpx.get(f"{p.server.url}/readyz").status_code == 200, timeout=30)
    first = engine_pid(p)
    os.kill(first, signal.SIGKILL)
    # The supervisor restarts a child at least 0.5 s after it died, longer than the
    # 300 ms this request waits for an engine to connect to.
    refused = p.post({"email": "k@b"})
    statuses.append(refused.status_code)
    assert code(refused) == (500, 1002)
    readiness = httpx.get(f"{p.server.url}/readyz")
    assert readiness.status_code == 503
    assert "p13n engine not listening" in readiness.json()["problems"]

    def answered() -> bool:
        statuses.append(p.post({"email": "k@b"}).status_code)
        return statuses[-1] == 200

    eventually(answered, timeout=30)
    assert engine_pid(p) != first
    assert httpx.get(f"{p.server.url}/readyz").status_code == 200
    assert set(statuses) == {200, 500}
    # Every event was stored, those answered 500 too; the profile counts those answered 200.
    n = len(statuses)
    rows = p.server.wait_for(
        "SELECT count(*) AS n FROM retail.pageviews", lambda r: r[0]["n"] == n, timeout=60
    )
    assert rows[0]["n"] == n
    assert p.profile("email=k@b")["events"] == statuses.count(200)
