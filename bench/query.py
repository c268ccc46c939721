"""Query bench: a TD_TIME_RANGE query over one day of 10 million rows, and a
sessionization of that day.

    bench/query [--rows 10000000] [--days 30] [--files-per-day 4] [--runs 5] [--keep]

1. Data: ``--rows`` rows spread evenly over ``--days`` days, in time order, written
   straight into DuckLake with tdedge's own ``Lake.commit`` (the loader's commit path,
   minus the journal: bench/loader.py and bench/postback measure that part), one commit
   per ``1/--files-per-day`` of a day, so each commit is one Parquet file holding a few
   hours. That is the layout the loader produces when events arrive in time order.
2. Job path without HTTP: the TD query is translated (TD_TIME_RANGE → ``time >= a AND
   time < b``) and run by the job runner's own Session (one DuckDB instance,
   ``job_threads`` threads, ``job_memory_limit``), result written as msgpack.gz.
3. Files read: EXPLAIN ANALYZE of the translated SQL; DuckLake's scan reports
   ``Total Files Read``, set against the table's file count.
4. REST: ``tdedge serve --api-port`` on that data dir (``--no-loader``: the loader's
   compaction would merge files in the middle of the measurement; step 5 shows what
   it does), the query issued with POST /v3/job/issue, status polled every 10 ms, the
   result fetched as JSON: wall time from issue to result.
5. After compaction: ``ducklake_merge_adjacent_files`` (what the loader runs every
   ``compaction_interval_s``), then files read again.
6. Sessionization: the same day's events cut into sessions per user (a new session
   after 30 minutes without an event), with plain window functions (lag, then a
   running sum), run as step 2 runs the first query; its median is also given as a
   ratio of the one-day query's.

Results go to bench/out/query-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from harness.ports import free_port
from tdedge import backends
from tdedge.config import Settings
from tdedge.control.jobs import JobStore
from tdedge.control.store import ControlStore
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.catalog import LAKE, attach
from tdedge.lake.connection import open_connection
from tdedge.lake.extensions import connect
from tdedge.lake.lake import Lake
from tdedge.query.session import Scope, Session
from tdedge.query.translate import Context, translate

DATABASE, TABLE = "bench_db", "events"
START = 1_698_796_800  # 2023-11-01 00:00:00 UTC
PATHS = np.array([f"/page/{i}" for i in range(50)])
OUT = Path(__file__).resolve().parent / "out"


def query_for(day: int) -> str:
    first = time.strftime("%Y-%m-%d", time.gmtime(START + day * 86400))
    last = time.strftime("%Y-%m-%d", time.gmtime(START + (day + 1) * 86400))
    return (
        "SELECT count(*) AS events, count(DISTINCT user_id) AS users, avg(value) AS mean "
        f"FROM {TABLE} WHERE TD_TIME_RANGE(time, '{first}', '{last}')"
    )


def sessionize_for(day: int) -> str:
    """Sessions per user over one day: what TD_SESSIONIZE_WINDOW is used for, written
    with window functions (lag, then a running sum of session starts)."""
    first = time.strftime("%Y-%m-%d", time.gmtime(START + day * 86400))
    last = time.strftime("%Y-%m-%d", time.gmtime(START + (day + 1) * 86400))
    return f"""
SELECT count(*) AS sessions, avg(events) AS events_per_session, max(events) AS longest
FROM (
  SELECT user_id, session, count(*) AS events
  FROM (
    SELECT user_id,
           sum(starts) OVER (PARTITION BY user_id ORDER BY time
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session
    FROM (
      SELECT user_id, time,
             CASE WHEN time - lag(time) OVER (PARTITION BY user_id ORDER BY time) <= 1800
                  THEN 0 ELSE 1 END AS starts
      FROM {TABLE}
      WHERE TD_TIME_RANGE(time, '{first}', '{last}')
    ) marked
  ) numbered
  GROUP BY user_id, session
) sessions
"""


def generate(settings: Settings, rows: int, days: int, files_per_day: int) -> dict[str, Any]:
    control = ControlStore.open(settings.control_db)
    if control.account_count() == 0:
        control.create_account(1)
    control.create_database(DATABASE, 1)
    control.close()
    chunks = days * files_per_day
    per_chunk = rows // chunks
    span = 86400 // files_per_day
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    lake = Lake.open(settings)
    try:
        for c in range(chunks):
            n = per_chunk if c < chunks - 1 else rows - per_chunk * (chunks - 1)
            times = np.sort(rng.integers(0, span, n)) + START + c * span
            table = pa.table(
                {
                    "time": pa.array(times, pa.int64()),
                    "user_id": pa.array(rng.integers(0, 100_000, n), pa.int64()),
                    "path": pa.array(PATHS[rng.integers(0, len(PATHS), n)], pa.string()),
                    "status": pa.array(rng.choice([200, 200, 200, 404, 500], n), pa.int64()),
                    "value": pa.array(rng.random(n), pa.float64()),
                }
            )
            lake.commit(Batch([TableRows(DATABASE, TABLE, table)], [], {}))
            if c % 20 == 0:
                print(f"  wrote {c + 1}/{chunks} files", file=sys.stderr)
    finally:
        lake.close()
    return {"rows": rows, "files": chunks, "seconds": round(time.perf_counter() - started, 1)}


def explain(settings: Settings, sql: str) -> dict[str, Any]:
    con = connect()
    try:
        attach(con, settings, read_only=True)
        con.execute(f"USE {LAKE}.{DATABASE}")
        plan = str(con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1])
        total = con.execute(
            f"SELECT count(*) FROM ducklake_list_files('{LAKE}', '{TABLE}', schema => '{DATABASE}')"
        ).fetchone()
    finally:
        con.close()
    m = re.search(r"Total Files Read:\s*([\d,]+)", plan)
    scan = plan[plan.find("TABLE_SCAN") :] if "TABLE_SCAN" in plan else plan
    return {
        # No count when the scan read no file (all pruned, or answered from metadata).
        "files_read": int(m.group(1).replace(",", "")) if m else None,
        "files_in_table": int(total[0]) if total else None,
        "scan_plan": [line.strip("│ ") for line in scan.splitlines() if line.strip("│ ─┌┐└┘┴┬")],
    }


def session_runs(settings: Settings, sql_td: str, runs: int) -> dict[str, Any]:
    jobs = JobStore.open(settings.control_db)
    session = Session(settings, Scope(1, frozenset({DATABASE})), 0, backends.results(settings))
    timings: list[float] = []
    result: Any = None
    try:
        for _ in range(runs):
            job = jobs.create(
                account_id=1,
                key_id="bench",
                type="presto",
                database=DATABASE,
                query=sql_td,
                now=time.time(),
            )
            started = time.perf_counter()
            result = session.run(job, lambda: None)
            timings.append(time.perf_counter() - started)
            assert result.status == "success", result.error
    finally:
        session.close()
        jobs.close()
    return {"seconds": _stats(timings), "rows": result.num_records if result else None}


def rest_runs(settings: Settings, sql_td: str, runs: int) -> dict[str, Any]:
    api_port, port = free_port(), free_port()
    log = settings.root / "serve.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdedge",
            "serve",
            "--data-dir",
            settings.data_dir,
            "--port",
            str(port),
            "--api-port",
            str(api_port),
            "--no-loader",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        endpoint = f"http://127.0.0.1:{api_port}"
        _wait(endpoint)
        key = ControlStore.open(settings.control_db).create_key(1, "master")
        headers = {"Authorization": f"TD1 {key}"}
        timings: list[float] = []
        answer: Any = None
        with httpx.Client(base_url=endpoint, headers=headers, timeout=60) as http:
            for _ in range(runs + 1):  # the first run warms the runner's session up
                started = time.perf_counter()
                job = http.post(f"/v3/job/issue/presto/{DATABASE}", data={"query": sql_td}).json()
                job_id = job["job_id"]
                while (status := http.get(f"/v3/job/status/{job_id}").json()["status"]) in (
                    "queued",
                    "running",
                ):
                    time.sleep(0.01)
                assert status == "success", http.get(f"/v3/job/show/{job_id}").text
                answer = http.get(f"/v3/job/result/{job_id}", params={"format": "json"}).text
                timings.append(time.perf_counter() - started)
        return {"seconds": _stats(timings[1:]), "answer": answer.strip()}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def compact(settings: Settings) -> float:
    """Merge adjacent files as the loader's compaction does (Lake.compact's merge step)."""
    con = open_connection(settings, read_only=False)
    started = time.perf_counter()
    try:
        con.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')")
    finally:
        con.close()
    return round(time.perf_counter() - started, 1)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def _wait(endpoint: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{endpoint}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--files-per-day", type=int, default=4)
    parser.add_argument("--day", type=int, default=None, help="the day read (default: middle)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--data-dir", default=None, help="reuse (or create) this data dir")
    args = parser.parse_args()

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="tdedge-query-bench-"))
    settings = Settings(data_dir=str(root / "data"))
    report: dict[str, Any] = {"command": " ".join(["bench/query", *sys.argv[1:]])}
    if not settings.lake_catalog_file.exists():
        print(f"generating {args.rows:,} rows over {args.days} days in {root}", file=sys.stderr)
        report["generate"] = generate(settings, args.rows, args.days, args.files_per_day)
    td_sql = query_for(args.days // 2 if args.day is None else args.day)
    report["query"] = td_sql
    report["duckdb_sql"] = translate(td_sql, Context(int(time.time())))
    report["pruning"] = explain(settings, report["duckdb_sql"])
    report["job_session"] = session_runs(settings, td_sql, args.runs)
    report["rest"] = rest_runs(settings, td_sql, args.runs)
    report["compaction_seconds"] = compact(settings)
    report["pruning_after_compaction"] = explain(settings, report["duckdb_sql"])
    report["after_compaction_job_session"] = session_runs(settings, td_sql, args.runs)
    day = args.days // 2 if args.day is None else args.day
    report["sessionize_query"] = sessionize_for(day)
    report["sessionize_job_session"] = session_runs(settings, sessionize_for(day), args.runs)
    report["sessionize_over_one_day_query"] = round(
        report["sessionize_job_session"]["seconds"]["median"]
        / report["after_compaction_job_session"]["seconds"]["median"],
        1,
    )

    OUT.mkdir(exist_ok=True)
    out = OUT / f"query-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\nwritten to {out}", file=sys.stderr)
    if not args.keep and args.data_dir is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
