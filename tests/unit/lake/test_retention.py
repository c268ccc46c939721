"""Import errors older than their retention are deleted; younger ones stay."""

from __future__ import annotations

from pathlib import Path

from tdedge.config import Settings
from tdedge.lake.batch import Batch
from tdedge.lake.connection import open_connection
from tdedge.lake.lake import Lake
from tdedge.lake.retention import expire_import_errors
from tests.unit.lake.test_lake import rejection

DAY = 86400


def test_import_errors_past_their_retention_are_deleted(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    now = 1_750_000_000
    with Lake.open(settings) as lake:
        ages = [40 * DAY, 31 * DAY, 30 * DAY - 1, DAY, 0]
        lake.commit(Batch([], [rejection(i, at=now - age) for i, age in enumerate(ages)], {}, []))
    con = open_connection(settings, read_only=False)
    try:
        assert expire_import_errors(con, now, 30 * DAY) == 2
        assert expire_import_errors(con, now, 30 * DAY) == 0  # nothing left to delete
        kept = con.execute("SELECT time FROM tdedge_system.import_errors ORDER BY time").fetchall()
    finally:
        con.close()
    assert [now - t for (t,) in kept] == [30 * DAY - 1, DAY, 0]
