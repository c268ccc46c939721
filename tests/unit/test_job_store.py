"""The job store's change test, which lets an idle job runner skip its claims."""

from __future__ import annotations

from pathlib import Path

from tdedge.control.jobs import JobStore

NOW = 1_800_000_000.0


def issue(store: JobStore) -> int:
    job = store.create(
        account_id=1, key_id="k", type="presto", database="db", query="SELECT 1", now=NOW
    )
    return job.id


def test_changed_sees_commits_of_other_connections_only_once(tmp_path: Path) -> None:
    db = tmp_path / "control.sqlite"
    runner, worker = JobStore.open(db), JobStore.open(db)
    try:
        assert runner.changed()  # nothing seen yet: look
        assert not runner.changed()
        job_id = issue(worker)  # an edge worker issues a job
        assert runner.changed()
        assert not runner.changed()
        claimed = runner.claim(NOW)  # the runner's own commits count too: a claim
        assert claimed is not None and claimed.id == job_id
        assert runner.changed()
        assert not runner.changed()
        assert runner.claim(NOW) is None  # a claim that finds nothing commits nothing
        assert not runner.changed()
    finally:
        runner.close()
        worker.close()
