#!/usr/bin/env python3
"""CPU per request of tdedge's own edge code, without HTTP: where a door's cost is.

    .venv/bin/python bench/edge_cpu.py [--door legacy|pixel|ingest] [--requests 32000]
        [--concurrency 64]

Drives ``EdgeApp.__rsgi__`` in this process on uvloop with a fake RSGI scope and
protocol, ``--concurrency`` requests in flight: the legacy door's POST of the postback
bench's body, the pixel bench's GET, or the ingest bench's POST of 100 events. Prints
CPU µs per request (every thread of this process, best of three rounds) twice: with a
journal that accepts without writing (the door's own Python), and with the real SQLite
journal (its write and fsync included). Compare with the whole server's CPU per request
under wrk (``bench/postback``, ``bench/pixel``, ``bench/ingest``): the difference is
granian's and asyncio's hand-offs between threads, which no handler change removes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
if Path(sys.prefix).resolve() != VENV.resolve() and (VENV / "bin" / "python").exists():
    os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])

# prometheus_client picks its storage at import: a throwaway multiprocess dir, as serve does.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tdedge-edge-cpu-"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import uvloop  # noqa: E402

from tdedge.config import Settings  # noqa: E402
from tdedge.control.store import ControlStore  # noqa: E402
from tdedge.edge.app import EdgeApp  # noqa: E402
from tdedge.journal.envelope import Envelope  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from pixel_ingest import ingest_body  # noqa: E402
from rsgi_fake import FakeProto  # noqa: E402

LEGACY_BODY = b'{"param1":"value1","param2":1234}'
INGEST_BODY = ingest_body()  # the ingest bench's: 100 events shaped like td-js-sdk's


def pixel_query(key: str) -> str:
    return (
        f"td_format=pixel&td_write_key={key.replace('/', '%2F')}&campaign=spring_sale"
        "&utm_source=newsletter&user=u12345&td_ip=td_ip&td_ua=td_ua"
    )


def prepared_data_dir() -> tuple[Settings, str]:
    """A data dir with an account, its write key and the database the doors write to:
    a made-up key is answered 200 too, but its records are kept as refusals, which is
    another path (and the refusal throttle soon answers 429)."""
    settings = Settings(data_dir=tempfile.mkdtemp(prefix="tdedge-edge-cpu-"))
    store = ControlStore.open(settings.control_db)
    try:
        account = store.create_account()
        key = store.create_key(account, "write")
        store.create_database("test_db", account)
    finally:
        store.close()
    return settings, key


class FakeScope:
    """One request of a door, as granian's RSGI scope shows it."""

    client = "127.0.0.1"
    authority = None

    def __init__(self, door: str, key: str) -> None:
        self.headers: dict[str, str]
        if door == "legacy":
            self.method, self.path, self.query_string = "POST", "/postback/v3/event/test_db/t", ""
            self.headers = {
                "host": "127.0.0.1:8080",
                "content-type": "application/json",
                "x-td-write-key": key,
            }
            self.body = LEGACY_BODY
        elif door == "pixel":
            self.method, self.path = "GET", "/postback/v3/event/test_db/pixel_bench"
            self.query_string = pixel_query(key)
            self.headers = {"host": "127.0.0.1:8080", "user-agent": "Mozilla/5.0 (bench)"}
            self.body = b""
        else:
            self.method, self.path, self.query_string = "POST", "/test_db/t", ""
            self.headers = {
                "host": "bench.records.in.localhost",
                "content-type": "application/vnd.treasuredata.v1+json",
                "authorization": f"TD1 {key}",
            }
            self.body = INGEST_BODY
        if self.body:
            self.headers["content-length"] = str(len(self.body))


class AcceptingJournal:
    """Accepts without writing: isolates the door's own work."""

    async def append_many(self, envs: Sequence[Envelope]) -> None:
        return None

    def close(self) -> None:
        return None


async def measure(door: str, requests: int, concurrency: int, null_journal: bool) -> float:
    settings, key = prepared_data_dir()
    app = EdgeApp(settings)
    app.__rsgi_init__(asyncio.get_running_loop())
    services = app._services  # a bench reaching in on purpose
    assert services is not None
    if null_journal:
        services.journal.close()
        services.journal = AcceptingJournal()  # type: ignore[assignment]
    scope = FakeScope(door, key)
    proto = FakeProto(scope.body)
    per_client = requests // concurrency

    async def client() -> None:
        for _ in range(per_client):
            await app.__rsgi__(scope, proto)  # type: ignore[arg-type]

    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        best = min(best, (time.process_time() - started) * 1e6 / (per_client * concurrency))
    app.__rsgi_del__(asyncio.get_running_loop())
    return best


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="bench/edge_cpu.py", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=32_000, help="requests per round [32000]")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight [64]")
    p.add_argument(
        "--door",
        choices=("legacy", "pixel", "ingest"),
        default="legacy",
        help="legacy POST, pixel GET, or an ingest POST of 100 events [legacy]",
    )
    args = p.parse_args(argv)
    runs = (
        (True, "door only (journal accepts, no write)"),
        (False, "door + SQLite journal (write + fsync)"),
    )
    for null_journal, what in runs:
        us = uvloop.run(measure(args.door, args.requests, args.concurrency, null_journal))
        print(f"{what:<40} {us:6.1f} µs CPU/request (best of 3)")


if __name__ == "__main__":
    main(sys.argv[1:])
