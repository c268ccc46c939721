"""Job result files go once past their retention; recent ones and other files stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tdedge.query.results import ResultWriter, expire_results, result_path

NOW = 1_800_000_000.0
DAY = 86400.0


def written(path: Path, at: float) -> Path:
    path.write_bytes(b"x")
    os.utime(path, (at, at))
    return path


def test_results_older_than_the_cutoff_are_deleted(tmp_path: Path) -> None:
    old = written(result_path(tmp_path, 1), NOW - 8 * DAY)
    left_by_a_dead_runner = written(tmp_path / "2.msgpack.tmp4242", NOW - 8 * DAY)
    recent = written(result_path(tmp_path, 3), NOW - 6 * DAY)
    other = written(tmp_path / "notes.txt", NOW - 30 * DAY)

    assert expire_results(tmp_path, NOW - 7 * DAY) == 2
    assert not old.exists() and not left_by_a_dead_runner.exists()
    assert recent.exists() and other.exists()
    assert expire_results(tmp_path, NOW - 7 * DAY) == 0


def test_a_result_just_written_is_kept(tmp_path: Path) -> None:
    writer = ResultWriter(result_path(tmp_path, 7))
    writer.write([[1, "a"]])
    writer.close()
    assert expire_results(tmp_path, time.time() - 7 * DAY) == 0
    assert result_path(tmp_path, 7).exists()
    assert expire_results(tmp_path / "missing", time.time()) == 0
