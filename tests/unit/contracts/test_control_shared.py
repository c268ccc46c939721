"""What the rest of the control plane must do on every control database: query jobs,
the p13n registry, the import ledger, retention rules and bulk import sessions, each
opened by ``tdedge.backends`` from the settings' one control URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdedge import backends
from tdedge.config import Settings
from tdedge.control.bulk_sessions import PartInfo
from tdedge.control.imports import Imported, ImportLedger
from tdedge.control.jobs import JobResult, JobStore
from tdedge.control.retention import RetentionRules
from tdedge.errors import LimitReached, NotFound
from tdedge.realtime import tokens, validation
from tdedge.realtime.registry import Registry

NOW = 1_800_000_000.0
EXAMPLE = (Path(__file__).parents[1] / "data" / "p13n-example.yaml").read_text()


@pytest.fixture
def jobs(settings: Settings) -> Iterator[JobStore]:
    store = backends.jobs(settings)
    yield store
    store.close()


def issue(store: JobStore, account_id: int = 1) -> int:
    job = store.create(
        account_id=account_id, key_id="k", type="presto", database="db", query="SELECT 1", now=NOW
    )
    return job.id


def test_a_job_is_issued_claimed_and_finished_once(jobs: JobStore) -> None:
    job_id = issue(jobs)
    claimed = jobs.claim(NOW + 1)
    assert claimed is not None and (claimed.id, claimed.status) == (job_id, "running")
    assert jobs.claim(NOW + 1) is None
    jobs.finish(job_id, JobResult(status="success", num_records=3), NOW + 2)
    done = jobs.get(job_id, account_id=1)
    assert done is not None and (done.status, done.num_records) == ("success", 3)
    assert jobs.get(job_id, account_id=2) is None
    assert jobs.list(1) == (1, [done])


def test_concurrent_runners_claim_each_job_exactly_once(settings: Settings) -> None:
    issuer = backends.jobs(settings)
    issued = {issue(issuer, account_id=a) for a in range(1, 4) for _ in range(10)}
    runners = [backends.jobs(settings) for _ in range(4)]
    claims: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(runners))

    def run(store: JobStore) -> None:
        start.wait()
        while (job := store.claim(NOW)) is not None:
            with lock:
                claims.append(job.id)

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in [issuer, *runners]:
        store.close()
    assert sorted(claims) == sorted(issued)


def test_changed_sees_a_job_issued_and_one_finished_elsewhere(settings: Settings) -> None:
    runner, worker = backends.jobs(settings), backends.jobs(settings)
    try:
        assert runner.changed()
        assert not runner.changed()
        job_id = issue(worker)
        assert runner.changed()
        assert not runner.changed()
        assert runner.claim(NOW) is not None
        runner.changed()
        worker.finish(job_id, JobResult(status="error", error="x"), NOW)
        assert runner.changed()
        assert not runner.changed()
    finally:
        runner.close()
        worker.close()


def test_a_kill_reaches_the_runner_and_recover_queues_a_dead_runners_job(jobs: JobStore) -> None:
    job_id = issue(jobs)
    assert jobs.claim(NOW) is not None
    assert jobs.kill(job_id, 1, NOW) == "running"
    assert jobs.kill_requested([job_id]) == {job_id}
    assert jobs.recover(NOW) == 0  # its lease holds


def test_a_job_whose_runner_died_is_retried_once_then_failed_with_a_reason(
    jobs: JobStore,
) -> None:
    job_id = issue(jobs)
    first = jobs.claim(NOW, runner="a", lease_s=30)
    assert first is not None and (first.runner, first.lease_until) == ("a", NOW + 30)
    jobs.renew("a", [job_id], NOW + 60)
    assert jobs.recover(NOW + 59) == 0
    assert jobs.recover(NOW + 61) == 1  # runner a is gone: queued again
    again = jobs.claim(NOW + 62, runner="b", lease_s=30)
    assert again is not None and (again.id, again.attempts) == (job_id, 2)
    # Runner a was only cut off: its late result does not overwrite b's run.
    assert not jobs.finish(job_id, JobResult(status="success"), NOW + 62, runner="a")
    # Runner b restarts: it takes its own job back at once, and it has failed twice.
    assert jobs.recover(NOW + 63, runner="b") == 0
    failed = jobs.get(job_id)
    assert failed is not None and failed.status == "error"
    assert failed.error is not None and "runner stopped" in failed.error


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    r = backends.registry(settings)
    r.apply(validation.parse(EXAMPLE), EXAMPLE)
    yield r
    r.close()


def test_the_registry_is_shared_by_every_opener(settings: Settings, registry: Registry) -> None:
    other = backends.registry(settings)
    try:
        applied = other.active()
        assert applied is not None and applied.source == EXAMPLE
        assert other.instance_ids() == registry.instance_ids()
        before = other.generation()
        token = registry.create_token("web", 1, False, ["10.0.0.0/8"])
        assert other.generation() > before
        parsed = tokens.parse(token)
        assert parsed is not None
        found = other.token_by_hash(parsed.digest)
        assert found is not None and found.allow_ips == ["10.0.0.0/8"] and not found.revoked
        other.revoke_token(found.token_id)
        again = registry.token_by_hash(parsed.digest)
        assert again is not None and again.revoked
        with pytest.raises(NotFound):
            registry.revoke_token("nope")
    finally:
        other.close()


def test_the_import_ledger_keeps_the_first_record_of_an_id(settings: Settings) -> None:
    engine = backends.control_engine(settings)
    ledger = ImportLedger(engine)
    ledger.record_many(
        [(1, "db", "t", "u1", Imported("aa", 2)), (1, "db", "t", "u1", Imported("bb", 9))], NOW
    )
    ledger.record(1, "db", "t", "u1", Imported("cc", 5), NOW + 10)
    assert ledger.find(1, "db", "t", "u1") == Imported("aa", 2)
    assert ledger.find(2, "db", "t", "u1") is None
    assert ledger.forget(NOW + 1) == 1
    assert ledger.find(1, "db", "t", "u1") is None
    engine.dispose()


def test_retention_rules_are_set_and_forgotten(settings: Settings) -> None:
    engine = backends.control_engine(settings)
    rules = RetentionRules(engine)
    rules.set("db", "t", 7)
    rules.set("db", "t", 3)
    rules.set("db", "u", 1)
    assert rules.get("db", "t") == 3
    assert [r.table for r in rules.all()] == ["t", "u"]
    rules.forget_database("db")
    assert rules.all() == []
    engine.dispose()


def test_bulk_session_parts_are_seen_by_every_opener(settings: Settings) -> None:
    first, second = backends.bulk_sessions(settings), backends.bulk_sessions(settings)
    try:
        session = first.create(
            account_id=1, name="s", database="db", table="t", token="tok", now=NOW, max_sessions=1
        )
        with pytest.raises(LimitReached):
            second.create(
                account_id=1,
                name="s2",
                database="db",
                table="t",
                token="t2",
                now=NOW,
                max_sessions=1,
            )
        body = b"\x00\x01" * 1000
        part = PartInfo(name="p1", bytes=len(body), records=1, error_records=0)
        first.put_part(session, part, body, NOW, max_parts=10, max_bytes=10**6)
        seen = second.find(1, "s")
        assert second.part_names(seen.id) == ["p1"]
        assert list(second.bodies(seen.id)) == [body]
        assert second.expire(NOW + 10**9, retention_s=1, expiry_s=1) == 1
        assert first.get(1, "s") is None
    finally:
        first.close()
        second.close()


def test_bulk_sessions_share_the_control_database_only_when_it_is_shared(
    settings: Settings,
) -> None:
    sessions = backends.bulk_sessions(settings)
    try:
        url = sessions._engine.url
        if settings.control:
            assert url.database == backends.control_engine(settings).url.database
        else:
            assert url.database == str(settings.bulk_sessions_db)
    finally:
        sessions.close()
