"""Query jobs: their state in the control database, shared by every process.

Any edge worker (of any listener, on any node) issues a job and answers its status; the
job runners claim queued jobs and record how they ended. SQLite in WAL mode serialises
the few writes; on PostgreSQL a claim locks the job's row ``FOR UPDATE SKIP LOCKED``, so
runners of several nodes pass over each other's claims; and ``claim`` is one
conditional UPDATE, so two runners could never take the same job. Ids come from
AUTOINCREMENT (a sequence on PostgreSQL) and are never reused, like TD's job ids. Times
are unix seconds and are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from tdedge.control import schema
from tdedge.control.store import sqlite_engine

JobStatus = Literal["queued", "running", "success", "error", "killed"]
FINISHED: frozenset[str] = frozenset({"success", "error", "killed"})
# A job whose runner died mid-way is queued again this many times, then fails: a
# query that kills the runner (memory) must not kill it forever.
MAX_ATTEMPTS = 2
# How long a claimed job stays its runner's without a renewal (Settings.job_lease_s).
DEFAULT_LEASE_S = 30.0

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("key_id", sa.String(12), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("database", sa.String(128), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("retry_limit", sa.Integer, nullable=False, default=0),
    sa.Column("scheduled_time", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("start_at", sa.Float, nullable=True),
    sa.Column("end_at", sa.Float, nullable=True),
    sa.Column("result_schema", sa.Text, nullable=True),  # JSON [[name, type], …]
    sa.Column("num_records", sa.BigInteger, nullable=True),
    sa.Column("result_size", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("kill_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # The runner holding a running job, and until when (it renews the lease while it
    # lives): a job whose lease ran out is recovered by any runner (``recover``).
    sa.Column("runner", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sqlite_autoincrement=True,
)
# Where a job writes its result besides its result file (TD's ``result`` parameter, a
# ``td://@/database/table`` URL): a table of its own, so control databases made
# before it need no change to the jobs table.
result_targets = sa.Table(
    "job_result_targets",
    metadata,
    sa.Column("job_id", sa.Integer, primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
)
sa.Index("jobs_status", jobs.c.status, jobs.c.priority, jobs.c.id)
sa.Index("jobs_account", jobs.c.account_id, jobs.c.id)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    account_id: int
    key_id: str
    type: str
    database: str
    query: str
    status: str
    priority: int
    retry_limit: int
    scheduled_time: int
    created_at: float
    updated_at: float
    start_at: float | None
    end_at: float | None
    result_schema: str | None
    num_records: int | None
    result_size: int | None
    error: str | None
    kill_requested: bool
    attempts: int
    runner: str | None = None
    lease_until: float | None = None
    result_url: str | None = None  # where the result is written too (result_targets)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a job ended, as the runner records it."""

    status: JobStatus
    result_schema: str | None = None
    num_records: int | None = None
    result_size: int | None = None
    error: str | None = None
    # The job wrote into a table (not stored): a kill that came after cannot undo it.
    wrote: bool = False


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        schema.ensure(engine)
        # ``changed``'s own connection and the data_version it saw last.
        self._watch: PoolProxiedConnection | None = None
        self._version: int | None = None

    @classmethod
    def open(cls, path: Path) -> JobStore:
        return cls(sqlite_engine(path))

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._engine.dispose()

    def create(
        self,
        *,
        account_id: int,
        key_id: str,
        type: str,
        database: str,
        query: str,
        now: float,
        priority: int = 0,
        retry_limit: int = 0,
        finished: JobResult | None = None,
        result_url: str | None = None,
    ) -> Job:
        """A queued job; or, with ``finished``, one that ran already (a bulk import's
        perform, counted in its request), which the runner never claims."""
        values: dict[str, Any] = {
            "account_id": account_id,
            "key_id": key_id,
            "type": type,
            "database": database,
            "query": query,
            "status": "queued",
            "priority": priority,
            "retry_limit": retry_limit,
            "scheduled_time": int(now),
            "created_at": now,
            "updated_at": now,
            "kill_requested": False,
            "attempts": 0,
        }
        if finished is not None:
            values |= {
                "status": finished.status,
                "num_records": finished.num_records,
                "result_size": finished.result_size,
                "error": finished.error,
                "start_at": now,
                "end_at": now,
                "attempts": 1,
            }
        with self._engine.begin() as conn:
            result = conn.execute(sa.insert(jobs).values(**values))
            job_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            if result_url is not None:
                conn.execute(sa.insert(result_targets).values(job_id=job_id, url=result_url))
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
        return _job(row, result_url)

    def get(self, job_id: int, account_id: int | None = None) -> Job | None:
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if account_id is not None:
            query = query.where(jobs.c.account_id == account_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
            url = None if row is None else _target(conn, int(row.id))
        return None if row is None else _job(row, url)

    def list(
        self, account_id: int, offset: int = 0, limit: int = 20, status: str | None = None
    ) -> tuple[int, list[Job]]:
        """(how many jobs match, the page of them), newest first."""
        where = [jobs.c.account_id == account_id]
        if status is not None:
            where.append(jobs.c.status == status)
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(*where))
            rows = conn.execute(
                sa.select(jobs).where(*where).order_by(jobs.c.id.desc()).offset(offset).limit(limit)
            ).all()
            count = int(total.scalar_one())
        return count, [_job(r) for r in rows]

    # The runner's side.
    def changed(self) -> bool:
        """Whether any other connection committed to the control database since the last
        call (True the first time): SQLite's ``data_version``, on a connection kept for it.

        A few µs, where a claim that finds nothing cost an idle runner ~0.9 ms of CPU at
        each poll (~2 % of a core at 20 polls a second): the runner claims only after a
        change (a job issued, one finished and its slot freed, …).
        """
        if self._engine.dialect.name != "sqlite":
            return self._jobs_changed()
        if self._watch is None:
            self._watch = self._engine.raw_connection()
        cursor = self._watch.cursor()
        try:
            cursor.execute("PRAGMA data_version")
            row = cursor.fetchone()
        finally:
            cursor.close()
        version = int(row[0]) if row else None
        changed = version is None or version != self._version
        self._version = version
        return changed

    def _jobs_changed(self) -> bool:
        """PostgreSQL has no ``data_version``: the newest job and the count of jobs not
        finished (one index scan) change whenever a job is issued or one ends."""
        newest = sa.select(sa.func.max(jobs.c.id)).scalar_subquery()
        unfinished = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.status.in_(("queued", "running")))
            .scalar_subquery()
        )
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(newest, unfinished)).one()
        version = hash((row[0], row[1]))
        changed = version != self._version
        self._version = version
        return changed

    def claim(
        self,
        now: float,
        running: Mapping[int, int] | None = None,
        per_account: int | None = None,
        runner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Job | None:
        """Take the next queued job and mark it running, leased to ``runner`` for
        ``lease_s`` (``renew`` extends it): of each account's next job
        (highest priority, then oldest), the one whose account has the fewest jobs
        ``running``, skipping accounts that have ``per_account`` running already. One
        account's queue of heavy jobs then never keeps another's out of every slot."""
        running = running or {}
        ranked = (
            sa.select(
                jobs.c.id,
                jobs.c.account_id,
                jobs.c.priority,
                sa.func.row_number()
                .over(partition_by=jobs.c.account_id, order_by=(jobs.c.priority.desc(), jobs.c.id))
                .label("rank"),
            )
            .where(jobs.c.status == "queued")
            .subquery()
        )
        with self._engine.begin() as conn:
            heads = conn.execute(
                sa.select(ranked.c.id, ranked.c.account_id, ranked.c.priority).where(
                    ranked.c.rank == 1
                )
            ).all()
            candidates = sorted(
                (
                    (running.get(h.account_id, 0), -h.priority, h.id)
                    for h in heads
                    if per_account is None or running.get(h.account_id, 0) < per_account
                ),
            )
            for _, _, job_id in candidates:
                # PostgreSQL: a job another runner is claiming is passed over, not waited
                # for (SQLite has one writer at a time and ignores the clause).
                free = conn.execute(
                    sa.select(jobs.c.id)
                    .where(jobs.c.id == job_id, jobs.c.status == "queued")
                    .with_for_update(skip_locked=True)
                ).first()
                if free is None:
                    continue
                done = conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status == "queued")
                    .values(
                        status="running",
                        start_at=now,
                        updated_at=now,
                        attempts=jobs.c.attempts + 1,
                        runner=runner,
                        lease_until=now + lease_s,
                    )
                )
                if done.rowcount == 1:
                    claimed = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
                    return _job(claimed, _target(conn, job_id))
        return None

    def queued(self, account_id: int) -> int:
        """How many of the account's jobs wait to run."""
        with self._engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(jobs.c.account_id == account_id, jobs.c.status == "queued")
            ).scalar()
        return int(found or 0)

    def finish(self, job_id: int, result: JobResult, now: float, runner: str | None = None) -> bool:
        """Record how a running job ended; with ``runner``, only while the job is still
        that runner's (its lease lost, another runner may be running it now). Whether
        it was recorded."""
        where = [jobs.c.id == job_id, jobs.c.status == "running"]
        if runner is not None:
            where.append(jobs.c.runner == runner)
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(jobs)
                .where(*where)
                .values(
                    status=result.status,
                    result_schema=result.result_schema,
                    num_records=result.num_records,
                    result_size=result.result_size,
                    error=result.error,
                    end_at=now,
                    updated_at=now,
                )
            )
        return bool(done.rowcount == 1)

    def kill(self, job_id: int, account_id: int, now: float) -> str | None:
        """Kill a job; returns its status before (None when there is no such job).

        A queued job is killed at once; a running one is flagged and the runner
        interrupts it within a poll interval; a finished one is left as it is.
        """
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(jobs.c.status).where(jobs.c.id == job_id, jobs.c.account_id == account_id)
            ).first()
            if row is None:
                return None
            former = str(row.status)
            if former == "queued":
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status == "queued")
                    .values(status="killed", end_at=now, updated_at=now, kill_requested=True)
                )
            elif former == "running":
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(kill_requested=True, updated_at=now)
                )
        return former

    def kill_requested(self, job_ids: Iterable[int]) -> set[int]:
        ids = list(job_ids)
        if not ids:
            return set()
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id).where(jobs.c.id.in_(ids), jobs.c.kill_requested)
            ).all()
        return {int(r.id) for r in rows}

    def renew(self, runner: str, job_ids: Iterable[int], until: float) -> None:
        """Extend the lease of ``runner``'s running jobs to ``until``."""
        ids = list(job_ids)
        if not ids:
            return
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.runner == runner, jobs.c.status == "running")
                .values(lease_until=until)
            )

    def recover(self, now: float, runner: str | None = None) -> int:
        """Jobs left running by a runner that died, whichever node it ran on: those whose
        lease ran out, and (``runner``, at a runner's start) those of its own earlier
        life. Each is queued again, or failed with a reason once it has taken
        MAX_ATTEMPTS runners down. How many were queued again."""
        dead = sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now)
        if runner is not None:
            dead = sa.or_(dead, jobs.c.runner == runner)
        stale = sa.and_(jobs.c.status == "running", dead)
        with self._engine.begin() as conn:
            again = conn.execute(
                sa.update(jobs)
                .where(stale, jobs.c.attempts < MAX_ATTEMPTS)
                .values(
                    status="queued", start_at=None, updated_at=now, runner=None, lease_until=None
                )
            ).rowcount
            conn.execute(
                sa.update(jobs)
                .where(stale)
                .values(
                    status="error",
                    error=f"the job runner stopped while running this job, {MAX_ATTEMPTS} times",
                    end_at=now,
                    updated_at=now,
                )
            )
        return int(again)


def _job(row: Any, result_url: str | None = None) -> Job:
    return Job(**{c.name: getattr(row, c.name) for c in jobs.columns}, result_url=result_url)


def _target(conn: sa.Connection, job_id: int) -> str | None:
    found = conn.execute(
        sa.select(result_targets.c.url).where(result_targets.c.job_id == job_id)
    ).scalar()
    return None if found is None else str(found)
