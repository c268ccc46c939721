"""TD_TIME_RANGE and TD_INTERVAL prune DuckLake files: EXPLAIN ANALYZE counts files read."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from tdedge.config import Settings
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.catalog import attach
from tdedge.lake.extensions import connect
from tdedge.lake.lake import Lake
from tdedge.query.translate import Context, translate

DAY = 86_400
START = 1_700_006_400  # 2023-11-15 00:00:00 UTC


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Four days of hourly rows, one commit (so one Parquet file) per day."""
    s = Settings(data_dir=str(tmp_path / "data"), lake_inlining_row_limit=0)
    lake = Lake.open(s)
    try:
        for day in range(4):
            times = list(range(START + day * DAY, START + (day + 1) * DAY, 3600))
            table = pa.table(
                {"time": pa.array(times, pa.int64()), "n": pa.array(times, pa.int64())}
            )
            lake.commit(Batch([TableRows("db", "events", table)], [], {}))
    finally:
        lake.close()
    return s


def files_read(settings: Settings, td_sql: str, scheduled: int = START) -> tuple[int, int]:
    """(files the scan read, rows counted) for the translated query.

    The scan prints no file count when it read none, or when DuckDB answered from the
    catalog's statistics without scanning: the queries here always scan.
    """
    con = connect()
    try:
        attach(con, settings, read_only=True)
        con.execute("USE lake.db")
        sql = translate(td_sql, Context(scheduled))
        plan = str(con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1])
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    m = re.search(r"Total Files Read:\s*(\d+)", plan)
    assert row is not None
    return (int(m.group(1)) if m else 0), int(row[0])


def test_time_range_reads_only_that_days_file(settings: Settings) -> None:
    sql = "SELECT count(*) FROM events WHERE TD_TIME_RANGE(time, '2023-11-16', '2023-11-17')"
    assert files_read(settings, sql) == (1, 24)


def test_time_range_in_tokyo_straddles_two_files(settings: Settings) -> None:
    sql = "SELECT count(*) FROM events WHERE TD_TIME_RANGE(time, '2023-11-16', '2023-11-17', 'JST')"
    assert files_read(settings, sql) == (2, 24)


def test_interval_reads_only_yesterdays_file(settings: Settings) -> None:
    sql = "SELECT count(*) FROM events WHERE TD_INTERVAL(time, '-1d')"
    assert files_read(settings, sql, scheduled=START + 2 * DAY + 5) == (1, 24)


def test_a_filter_on_another_column_reads_every_file(settings: Settings) -> None:
    # The control: without a time predicate nothing is pruned.
    assert files_read(settings, "SELECT count(*) FROM events WHERE n % 2 = 0") == (4, 96)
