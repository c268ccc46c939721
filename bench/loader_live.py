"""Loader CPU per row at a steady rate: what the loader takes from the edge's cores.

A writer process appends ``--rate`` records/s to a real SQLite journal, ``--per-row``
envelopes per journal row (an edge loop iteration's worth), with tdedge's own
SQLiteJournal; the real Loader runs in this process, its ``run`` loop on a thread, as
in ``serve``. After a warm-up, the process's CPU time (user + system, every thread)
is divided by the rows loaded.

    .venv/bin/python bench/loader_live.py --rate 9000 --seconds 15 [--record ingest --per-row 100]

``--record mobile`` gives every record its own record_uuid: the loader's de-duplication
(a ledger lookup and a claim per record) at its most expensive.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import threading
import time

from prometheus_client import REGISTRY

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.journal.envelope import Envelope
from tdedge.journal.sqlite import SQLiteJournal, SQLiteJournalReader
from tdedge.lake.lake import Lake
from tdedge.loader.record_ids import RecordIds
from tdedge.loader.runner import Loader

# What bench/postback posts, one event of bench/ingest's td-js-sdk-like batches (the
# door gives it tdedge's id, the journal entry carries it), and a mobile SDK event
# with its record_uuid (every record then a lookup and a claim in the loader's ledger).
TDEDGE_ID = "019ab2c3-5e6f-7a1b-8c2d-3e4f5a6b7c8d"
RECORDS = {
    "postback": ("legacy", b'{"param1":"value1","param2":1234}', False),
    "ingest": (
        "ingest",
        b'{"td_version":"4.4.3","td_client_id":"4f1c2b3a-0000-4000-8000-000000000042",'
        b'"td_charset":"utf-8","td_language":"en-us","td_screen":"1920x1080",'
        b'"td_viewport":"1280x720","td_title":"Spring sale",'
        b'"td_url":"https://shop.example.com/sale?item=42","td_path":"/sale",'
        b'"td_host":"shop.example.com","action":"view","item":42,"price":19.99}',
        False,
    ),
    "mobile": (
        "ingest",
        b'{"td_uuid":"5a3c1f0e-2b4d-4e6f-9a8b-7c6d5e4f3a2b","td_os_type":"Android",'
        b'"td_model":"Pixel 8","td_app_ver":"2.4.1","time":1750000000,"screen":"cart",'
        b'"uuid":"c0ffee00-1111-4222-8333-944445555666"}',
        True,
    ),
}
WARM_UP_S = 3.0
ROWS, BATCHES = "tdedge_rows_written_total", "tdedge_loader_batches_total"


def write(root: str, key_hash: bytes, rate: int, per_row: int, until: float, record: str) -> None:
    """Append ``rate`` records/s until the monotonic clock reaches ``until``."""
    settings = Settings(data_dir=root, journal_max_backlog=1 << 40)
    door, body, with_uuid = RECORDS[record]
    record_id = TDEDGE_ID if door == "ingest" else ""

    async def append() -> None:
        journal = SQLiteJournal(settings)
        interval, due = per_row / rate, time.monotonic()
        n = 0
        try:
            while time.monotonic() < until:
                now_ms = time.time_ns() // 1_000_000
                envs = []
                for _ in range(per_row):
                    n += 1
                    uuid = f"{os.getpid()}-{n}" if with_uuid else ""
                    envs.append(
                        Envelope(
                            now_ms,
                            door,
                            "bench_db",
                            "events",
                            key_hash,
                            body,
                            record_id=record_id,
                            record_uuid=uuid,
                        )
                    )
                await journal.append_many(envs)
                due += interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        finally:
            journal.close()

    asyncio.run(append())


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=9_000, help="records/s [9000]")
    parser.add_argument("--per-row", type=int, default=30, help="envelopes per row [30]")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--record", choices=sorted(RECORDS), default="postback", help="record shape [postback]"
    )
    args = parser.parse_args()
    if args.rate < 1 or args.per_row < 1:
        parser.error("--rate and --per-row must be >= 1")
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(data_dir=root, journal_max_backlog=1 << 40)
        store = ControlStore.open(settings.control_db)
        key = store.create_key(1, "master")
        until = time.monotonic() + WARM_UP_S + args.seconds
        writer = multiprocessing.get_context("spawn").Process(
            target=write,
            args=(root, hash_key(key), args.rate, args.per_row, until, args.record),
        )
        writer.start()
        lake = Lake.open(settings)
        reader = SQLiteJournalReader(settings.journal_dir)
        record_ids = RecordIds.open(settings.record_ids_db)  # as serve runs it
        loader = Loader(settings, reader, Directory(store, ttl_s=60), lake, record_ids=record_ids)
        stop = threading.Event()
        thread = threading.Thread(target=loader.run, args=(stop,), name="loader")
        thread.start()
        try:
            time.sleep(WARM_UP_S)
            rows0, batches0 = sample(ROWS), sample(BATCHES)
            cpu0, wall0 = os.times(), time.monotonic()
            worst_lag = 0.0
            while time.monotonic() < until:
                time.sleep(0.1)
                worst_lag = max(worst_lag, sample("tdedge_loader_lag_seconds"))
            cpu1, wall = os.times(), time.monotonic() - wall0
        finally:
            stop.set()
            thread.join()
            writer.join()
        rows = sample(ROWS) - rows0
        batches = sample(BATCHES) - batches0
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        print(
            f"{rows:,.0f} rows in {wall:.1f} s ({rows / wall:,.0f}/s), {batches:.0f} commits "
            f"({rows / max(batches, 1):,.0f} rows each); loader CPU {cpu:.2f} s = "
            f"{cpu / wall:.1%} of a core, {cpu / max(rows, 1) * 1e6:.1f} us per row; "
            f"largest lag {worst_lag:.2f} s"
        )
        lake.close()
        record_ids.close()
        reader.close()
        store.close()


if __name__ == "__main__":
    main()
