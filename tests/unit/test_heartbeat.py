"""loader/heartbeat.py: the files /readyz reads, and what it says about the job runner."""

from __future__ import annotations

from pathlib import Path

from tdedge.loader.heartbeat import (
    Heartbeat,
    JobsHeartbeat,
    jobs_problems,
    read_beat,
    read_heartbeat,
    write_heartbeat,
)


def test_each_kind_of_beat_round_trips(tmp_path: Path) -> None:
    jobs = JobsHeartbeat(time=100.0, pid=7, running=2)
    loader = Heartbeat(time=100.0, lag_records=3, lag_seconds=0.5, pid=8)
    write_heartbeat(tmp_path / "run" / "jobs.json", jobs)
    write_heartbeat(tmp_path / "run" / "loader.json", loader)
    assert read_beat(tmp_path / "run" / "jobs.json", JobsHeartbeat) == jobs
    assert read_heartbeat(tmp_path / "run" / "loader.json") == loader
    assert [p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".tmp"] == []


def test_a_missing_or_garbled_beat_reads_as_none(tmp_path: Path) -> None:
    assert read_beat(tmp_path / "jobs.json", JobsHeartbeat) is None
    (tmp_path / "jobs.json").write_text("not json")
    assert read_beat(tmp_path / "jobs.json", JobsHeartbeat) is None
    (tmp_path / "jobs.json").write_text('{"time": 1.0}')  # not a job runner's beat
    assert read_beat(tmp_path / "jobs.json", JobsHeartbeat) is None


def test_readyz_problems_of_the_job_runner() -> None:
    beat = JobsHeartbeat(time=1000.0, pid=7, running=0)
    assert jobs_problems(None, 1000.0, 10.0) == ["job runner has not started"]
    assert jobs_problems(beat, 1009.0, 10.0) == []
    assert jobs_problems(beat, 1012.4, 10.0) == ["job runner silent for 12s"]
