"""The job store: its change test, which lets an idle job runner skip its claims, and
the order in which accounts' jobs are claimed."""

from __future__ import annotations

from pathlib import Path

from tdedge.control.jobs import JobResult, JobStore

NOW = 1_800_000_000.0


def issue(store: JobStore, account_id: int = 1, priority: int = 0) -> int:
    job = store.create(
        account_id=account_id,
        key_id="k",
        type="presto",
        database="db",
        query="SELECT 1",
        now=NOW,
        priority=priority,
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


def test_claims_take_turns_between_accounts(tmp_path: Path) -> None:
    store = JobStore.open(tmp_path / "control.sqlite")
    try:
        heavy = [issue(store, account_id=2) for _ in range(5)]
        light = issue(store, account_id=1)
        urgent = issue(store, account_id=2, priority=2)
        first = store.claim(NOW, {}, per_account=1)
        assert first is not None and first.id == urgent  # priority first within an account
        # Account 2 has a job running: account 1's comes next although it is newer.
        second = store.claim(NOW, {2: 1}, per_account=1)
        assert second is not None and second.id == light
        # Both at their limit: nothing is claimed although account 2 has jobs queued.
        assert store.claim(NOW, {1: 1, 2: 1}, per_account=1) is None
        assert store.queued(2) == 5 and store.queued(1) == 0
        third = store.claim(NOW, {1: 1, 2: 1}, per_account=2)
        assert third is not None and third.id == heavy[0]  # oldest first
    finally:
        store.close()


def test_a_job_created_finished_is_listed_and_never_claimed(tmp_path: Path) -> None:
    store = JobStore.open(tmp_path / "control.sqlite")
    try:
        done = store.create(
            account_id=1,
            key_id="k",
            type="bulk_import",
            database="db",
            query="session-1",
            now=NOW,
            finished=JobResult(status="success", num_records=7),
        )
        assert (done.status, done.num_records, done.start_at, done.end_at) == (
            "success",
            7,
            NOW,
            NOW,
        )
        assert store.claim(NOW) is None
        assert store.queued(1) == 0
        assert [j.id for j in store.list(1)[1]] == [done.id]
    finally:
        store.close()
