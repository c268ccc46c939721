"""loader/heartbeat.py: the files /readyz reads, and what it says about the job runner."""

from __future__ import annotations

import os
from pathlib import Path

from tdedge.loader.heartbeat import (
    Heartbeat,
    JobsHeartbeat,
    jobs_problems,
    read_beat,
    read_heartbeat,
    starting_beat,
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


def test_starts_that_never_got_to_serve_are_counted(tmp_path: Path) -> None:
    """The supervisor restarts a runner that dies; one that dies while starting, every
    time, must not look like a healthy one."""
    path = tmp_path / "jobs.json"
    first = starting_beat(path, 100.0)  # nothing before it
    assert (first.serving, first.failed_starts, first.pid) == (False, 0, os.getpid())

    # An earlier process died before serving, twice.
    for failed in (1, 2):
        write_heartbeat(
            path,
            JobsHeartbeat(time=1.0, pid=-1, running=0, serving=False, failed_starts=failed - 1),
        )
        assert starting_beat(path, 100.0).failed_starts == failed
    # This process beat already (the CLI, before the runner's own first beat): the same.
    write_heartbeat(path, starting_beat(path, 100.0))
    assert starting_beat(path, 101.0) == JobsHeartbeat(
        time=101.0, pid=os.getpid(), running=0, serving=False, failed_starts=2
    )
    # An earlier process that served and then stopped: a clean start.
    write_heartbeat(path, JobsHeartbeat(time=1.0, pid=-1, running=0))
    assert starting_beat(path, 100.0).failed_starts == 0


def test_readyz_says_when_the_job_runner_keeps_failing_to_start() -> None:
    starting = JobsHeartbeat(time=1000.0, pid=7, running=0, serving=False)
    assert jobs_problems(starting, 1001.0, 10.0) == []  # a first start takes its time
    again = JobsHeartbeat(time=1000.0, pid=7, running=0, serving=False, failed_starts=3)
    assert jobs_problems(again, 1001.0, 10.0) == [
        "job runner failed to start 3 times in a row (see the serve log); starting again"
    ]
    once = JobsHeartbeat(time=1000.0, pid=7, running=0, serving=False, failed_starts=1)
    assert "failed to start once" in jobs_problems(once, 1001.0, 10.0)[0]
