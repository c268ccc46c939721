"""Cluster bench: rows/s into one shared lake (a PostgreSQL catalog, files on S3) with
1, 2 and 4 loaders, and the commits/s the catalog sustains.

    bench/cluster [--loaders 1,2,4] [--seconds 20] [--batch-rows 2000] [--offered R]

Starts a throw-away PostgreSQL 15 and SeaweedFS (S3) as the tests do
(tests/postgres.py, tests/seaweed.py). Each loader is a process of its own with a data
dir of its own, committing batches through tdedge's own ``Lake.commit`` (the loader's
commit path with its journal positions, minus the journal) into a table of its own for
``--seconds``. Two measures per loader count:

1. rows/s: batches of ``--batch-rows`` rows (Parquet files on S3);
2. commits/s: batches of one row (inlined in the catalog), the catalog's commit rate.

With ``--offered R``, instead: R rows/s arrive at each loader and each commits what has
arrived, as the loader does; its batches grow when commits are contended. Total rows/s
against the offered N x R says whether adding loaders holds the rate, and the longest
wait says what the contention costs in freshness.

Commits that failed and were retried as a whole (conflicts between the loaders) are
counted, and so are the S3 PUTs (the data files each loader wrote). The machine's load
average is recorded with each round: the figures mean little on a machine busy with
other work. Results go to bench/out/cluster-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
from tests import postgres, seaweed  # noqa: E402

from tdedge.config import Settings  # noqa: E402
from tdedge.lake.batch import Batch, TableRows  # noqa: E402
from tdedge.lake.lake import Lake  # noqa: E402

# How long loaders wait for each other to open their lakes before the clock starts.
START_TIMEOUT_S = 600.0


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying the whole transaction" in record.getMessage():
            self.count += 1


def _loader(
    settings_json: str,
    env: dict[str, str],
    table: str,
    rows: int,
    ready: Any,
    seconds: float,
    offered: float,
) -> dict[str, float]:
    os.environ.update(env)
    retries = _Retries()
    logging.getLogger("tdedge.lake").addHandler(retries)
    logging.getLogger("tdedge.lake").setLevel(logging.INFO)
    settings = Settings.from_json(settings_json)
    lake = Lake.open(settings)
    seq = 0
    commits = 0
    loaded = 0
    try:
        # The table exists before the clock starts: creating it is not the steady state.
        lake.commit(Batch([_rows(table, 1, 0)], [], {"shard-00": 0}))
        # Every loader starts together, once all have opened their lake: on a busy
        # machine that takes from seconds to minutes.
        ready.wait(START_TIMEOUT_S)
        start = time.time()
        stop = start + seconds
        lag = 0.0
        while (now := time.time()) < stop:
            if offered:
                # What has arrived since the last commit, up to the loader's batch limit:
                # a loader commits what waits, so its batches grow when commits are slow.
                due = min(int(offered * (now - start)) - loaded, settings.loader_batch_max_records)
                if due <= 0:
                    time.sleep(0.005)
                    continue
                # The oldest row in this batch arrived when `loaded` rows had.
                lag = max(lag, now - (start + loaded / offered))
                batch = due
            else:
                batch = rows
            lake.commit(Batch([_rows(table, batch, seq)], [], {"shard-00": seq + batch}))
            seq += batch
            commits += 1
            loaded += batch
        elapsed = time.time() - start
    finally:
        lake.close()
    return {
        "rows": loaded,
        "commits": commits,
        "seconds": elapsed,
        "retries": retries.count,
        "max_lag_s": round(lag, 3),
    }


def _rows(table: str, n: int, base: int) -> TableRows:
    ids = list(range(base, base + n))
    data = pa.table({"time": [1_700_000_000 + i for i in ids], "id": ids, "v": ["x" * 40] * n})
    return TableRows("bench", table, data)


def _round(
    loaders: int,
    rows: int,
    seconds: float,
    catalog: str,
    data: str,
    env: dict[str, str],
    offered: float = 0.0,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tdedge-cluster-"))
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    ready = manager.Barrier(loaders)
    args = [
        (
            Settings(data_dir=str(root / f"node{i}"), lake_catalog=catalog, lake_data=data)
            .to_json()
            .decode(),
            env,
            f"t{i}_{rows}",
            rows,
            ready,
            seconds,
            offered,
        )
        for i in range(loaders)
    ]
    try:
        with context.Pool(loaders) as pool:
            results = pool.starmap(_loader, args)
    finally:
        manager.shutdown()
    total_rows = sum(r["rows"] for r in results)
    total_commits = sum(r["commits"] for r in results)
    # The last commit may end past the window: the longest loader's time is the round's.
    elapsed = max(r["seconds"] for r in results)
    return {
        "loaders": loaders,
        "batch_rows": rows if not offered else round(total_rows / max(1, total_commits)),
        "offered_rows_per_s": offered * loaders,
        "max_lag_s": max(r["max_lag_s"] for r in results),
        "rows_per_s": round(total_rows / elapsed, 1),
        "commits_per_s": round(total_commits / elapsed, 2),
        "retried_commits": sum(r["retries"] for r in results),
        "load_average": list(os.getloadavg()),
        "per_loader": results,
    }


def _objects(s3: seaweed.SeaweedFS, data: str) -> int:
    """Objects under ``data``: the round's PUTs (DuckLake writes each file once)."""
    bucket, _, prefix = data.removeprefix("s3://").partition("/")
    return len(s3.objects(bucket, prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loaders", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument(
        "--offered",
        type=float,
        default=0.0,
        help="rows/s arriving at each loader: each commits what has arrived (its batches "
        "grow when commits are slow) instead of fixed batches; 0: fixed batches",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.loaders.split(",")]
    out: dict[str, Any] = {"seconds": args.seconds, "rounds": []}
    with postgres.server() as pg, seaweed.server() as s3:
        env = s3.environ()
        sizes = (args.batch_rows, 1) if not args.offered else (0,)
        for rows in sizes:
            for loaders in counts:
                catalog = pg.new_database()
                data = f"s3://{s3.new_bucket()}/lake/"
                found = _round(loaders, rows, args.seconds, catalog, data, env, args.offered)
                out["rounds"].append(found)
                found["s3_puts"] = _objects(s3, data)
                shape = (
                    f"{found['offered_rows_per_s']:g} rows/s offered, "
                    f"{found['batch_rows']}-row batches on average, "
                    f"longest wait {found['max_lag_s']} s"
                    if args.offered
                    else f"{rows}-row batches"
                )
                print(
                    f"{loaders} loader(s), {shape}: {found['rows_per_s']} rows/s, "
                    f"{found['commits_per_s']} commits/s, "
                    f"{found['retried_commits']} commits retried, "
                    f"{found['s3_puts']} objects on S3, "
                    f"load average {found['load_average'][0]:.1f}",
                    flush=True,
                )
    target = ROOT / "bench" / "out"
    target.mkdir(exist_ok=True)
    path = target / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
