"""The job runner process: claims queued jobs and runs them, a bounded number at once.

One runner per data dir (``serve`` starts it; ``tdedge jobs`` runs it alone). Edge
workers of every listener only write jobs into the control database and read them
back; the runner polls it, so jobs issued on one worker are run, answered and killed
from any other, and survive the restart of any edge worker. A poll claims only when the
database changed since the last one (``JobStore.changed``), so an idle runner costs
almost nothing. ``job_workers`` slots bound how many jobs run at once, and
``job_account_slots`` how many of one account's; the next job comes from the account
with the fewest running. A job runs in a session (query/session.py) that sees only its
account's databases; idle sessions are kept for the next job of the same account, up
to ``job_workers`` of them. Each job has a deadline (``job_timeout_s``) and is
interrupted past it, or when a kill is requested.
A claimed job is leased to its runner (named by host and data dir, so a restarted
runner knows its own), which renews the leases every second. A runner that dies leaves
its jobs ``running``: it takes them back at its next start, and a runner of any other
node on the same control database takes them once their lease ran out
(``job_lease_s``); each is queued again, or failed with a reason after two attempts.
Jobs that write (INSERT, CREATE TABLE AS, DELETE) hand their rows to the runner's one
TableWriter (query/writes.py), into the databases the job's key may both read and
write now (control/access.py): a key revoked since the job was issued writes nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from tdedge import backends, lifecycle
from tdedge.config import Settings
from tdedge.control import access
from tdedge.control.jobs import Job, JobResult, JobStore
from tdedge.control.store import ControlStore
from tdedge.lake.connection import open_connection
from tdedge.loader.heartbeat import JobsHeartbeat, starting_beat, write_heartbeat
from tdedge.query.session import Scope, Session
from tdedge.query.writes import TableWriter
from tdedge.results.store import ResultStore, ResultStoreDown

log = logging.getLogger("tdedge.query")

# Expired result files are looked for this often (more often for a short retention).
EXPIRE_EVERY_S = 60.0
# The heartbeat /readyz reads (Settings.jobs_heartbeat), from the scheduling loop.
BEAT_EVERY_S = 1.0
# A free slot claims at least this often, even when the control database reported no
# change (JobStore.changed): a safety net, not the way jobs are found.
CLAIM_ANYWAY_S = 1.0


@dataclass(slots=True)
class Running:
    job: Job
    deadline: float
    session: Session | None = None  # None while the job's session opens
    reason: str | None = None  # set when the runner interrupts the job

    def interrupt(self, reason: str) -> None:
        self.reason = reason
        if self.session is not None:
            self.session.interrupt()


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        control: ControlStore,
        results: ResultStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._control = control
        self._results = results
        self._clock = clock
        self._idle: list[Session] = []  # least recently used first
        self._opened = 0  # sessions opened so far: each spills into a folder of its own
        self._running: dict[int, Running] = {}
        self._lock = threading.Lock()
        self._expired_at = float("-inf")
        self._expiring: threading.Thread | None = None
        self._beaten_at = float("-inf")
        self._claimed_at = float("-inf")  # the last time a free slot looked for a job
        self._writer = TableWriter(settings, control.engine)
        self.name = f"{socket.gethostname()}:{settings.root.resolve()}"[:128]

    def run(self, stop: threading.Event) -> None:
        self._write_beat(starting_beat(self._settings.jobs_heartbeat, self._clock()))
        # Sets the lake up when nobody has yet, so sessions can read its catalog.
        open_connection(self._settings, read_only=True).close()
        shutil.rmtree(self._settings.root / "run" / "job-tmp", ignore_errors=True)
        requeued = self._jobs.recover(self._clock(), runner=self.name)
        self._beat(self._clock())
        slots = self._settings.job_workers
        log.info("job runner started", extra={"slots": slots, "requeued": requeued})
        with ThreadPoolExecutor(slots, thread_name_prefix="job") as pool:
            while not stop.is_set():
                now = self._clock()
                self.tick(pool, now)
                if now - self._beaten_at >= BEAT_EVERY_S:
                    self._beat(now)
                stop.wait(self._settings.job_poll_s)
            with self._lock:
                for running in self._running.values():
                    running.interrupt("the job runner stopped")
        self.close()
        log.info("job runner stopped")

    def close(self) -> None:
        """Close the idle sessions and the writer (``run`` does when it stops)."""
        for session in self._idle:
            session.close()
        self._idle.clear()
        self._writer.close()

    def _beat(self, now: float) -> None:
        with self._lock:
            running = len(self._running)
            ids = list(self._running)
        try:
            # Leases: this runner's jobs stay its own; those of runners gone elsewhere
            # come back to the queue (or fail) once theirs ran out.
            self._jobs.renew(self.name, ids, now + self._settings.job_lease_s)
            self._jobs.recover(now)
        except sa.exc.SQLAlchemyError as e:
            log.error("cannot renew job leases", extra={"error": str(e)})
        self._write_beat(JobsHeartbeat(time=now, pid=os.getpid(), running=running))

    def _write_beat(self, beat: JobsHeartbeat) -> None:
        self._beaten_at = beat.time
        try:
            write_heartbeat(self._settings.jobs_heartbeat, beat)
        except OSError:
            log.exception("cannot write the job runner heartbeat %s", self._settings.jobs_heartbeat)

    def tick(self, pool: ThreadPoolExecutor, now: float) -> None:
        """Start what fits in the free slots; interrupt what is over time or killed;
        now and then delete results past their retention."""
        self._interrupt(now)
        if now - self._expired_at >= min(EXPIRE_EVERY_S, self._settings.job_result_retention_s / 4):
            self._expired_at = now
            # Off the scheduling loop: listing and deleting results on S3 may wait on
            # the network, and this loop renews the leases of the jobs running here.
            if self._expiring is None or not self._expiring.is_alive():
                self._expiring = threading.Thread(
                    target=self.expire, args=(now,), name="job-results-expiry", daemon=True
                )
                self._expiring.start()
        if self._free() == 0:
            return  # no change is taken as seen while no slot could act on it
        if not self._jobs.changed() and now - self._claimed_at < CLAIM_ANYWAY_S:
            return
        self._claimed_at = now
        while self._free() > 0:
            with self._lock:
                per_account = Counter(r.job.account_id for r in self._running.values())
            job = self._jobs.claim(
                now,
                per_account,
                self._settings.job_account_slots,
                runner=self.name,
                lease_s=self._settings.job_lease_s,
            )
            if job is None:
                return
            running = Running(job, now + self._settings.job_timeout_s)
            with self._lock:
                self._running[job.id] = running
            future = pool.submit(self._execute, running)
            future.add_done_callback(_log_crash)

    def _free(self) -> int:
        with self._lock:
            return self._settings.job_workers - len(self._running)

    def expire(self, now: float) -> int:
        cutoff = now - self._settings.job_result_retention_s
        try:
            removed = self._results.expire(cutoff)
        except (OSError, ResultStoreDown) as e:
            log.error("cannot expire job results", extra={"error": str(e)})
            return 0
        if removed:
            log.info("expired job results", extra={"files": removed})
        return removed

    def _interrupt(self, now: float) -> None:
        with self._lock:
            running = dict(self._running)
        if not running:
            return
        killed = self._jobs.kill_requested(running)
        for job_id, r in running.items():
            if r.reason is not None:
                continue
            if job_id in killed:
                r.reason = "killed"
            elif now > r.deadline:
                r.reason = f"timed out after {self._settings.job_timeout_s:g} s"
            else:
                continue
            log.info("interrupting job", extra={"job": job_id, "reason": r.reason})
            r.interrupt(r.reason)

    def _execute(self, running: Running) -> None:
        job = running.job
        started = time.monotonic()
        session: Session | None = None
        try:
            scope = self._scope(job)
            session = self._session(scope)
            with self._lock:
                running.session = session
            if running.reason is not None:  # interrupted while its session opened
                session.interrupt()
            writable = self._writable(job, scope)
            result = session.run(job, lambda: running.reason, self._writer, writable)
        except Exception as e:  # a fault of tdedge's, not of the query
            log.exception("job failed unexpectedly", extra={"job": job.id})
            result = JobResult(status="error", error=f"internal error: {e}")
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                if session is not None:
                    self._idle.append(session)
                    retired = self._idle[: max(0, len(self._idle) - self._settings.job_workers)]
                    del self._idle[: len(retired)]
                else:
                    retired = []
            for old in retired:
                old.close()
        if result.status == "success" and running.reason == "killed" and not result.wrote:
            result = JobResult(status="killed", error="killed on request")
        if not self._jobs.finish(job.id, result, self._clock(), runner=self.name):
            # Its lease ran out while it ran (the control database unreachable for
            # longer than job_lease_s): another runner has it now, and records it.
            log.warning("job no longer this runner's: not recorded", extra={"job": job.id})
        log.info(
            "job finished",
            extra={
                "job": job.id,
                "status": result.status,
                "rows": result.num_records,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _scope(self, job: Job) -> Scope:
        """The databases the job's account owns now: a database created since the
        account's last job is in, one deleted is out."""
        owned = frozenset(
            name
            for name, owner in self._control.database_owners().items()
            if owner == job.account_id
        )
        return Scope(job.account_id, owned)

    def _writable(self, job: Job, scope: Scope) -> frozenset[str]:
        """The databases of ``scope`` the job's key may read and write now."""
        key = next((k for k in self._control.list_keys() if k.key_id == job.key_id), None)

        def allowed(database: str, action: access.Action) -> bool:
            decision = access.decide(key, action, database, job.account_id, auto_create=False)
            return isinstance(decision, access.Allowed)

        return frozenset(
            database
            for database in scope.databases
            if allowed(database, access.Action.READ) and allowed(database, access.Action.WRITE)
        )

    def _session(self, scope: Scope) -> Session:
        """An idle session of ``scope`` (its lake refreshed when it runs), else a new one."""
        with self._lock:
            for i, session in enumerate(self._idle):
                if session.scope == scope:
                    return self._idle.pop(i)
            self._opened += 1
            number = self._opened
        return Session(self._settings, scope, number, self._results)


def _log_crash(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.error("job thread crashed", exc_info=error)


def run_job_runner(settings: Settings, parent_pid: int | None) -> None:
    """The runner process: one per data dir; stops on SIGTERM or when ``serve`` is gone."""
    stop = lifecycle.stop_event(parent_pid)
    fd = lifecycle.role_lock(settings, "jobs", stop)
    if fd is None:
        return
    jobs = backends.jobs(settings)
    control = backends.control(settings)
    results = backends.results(settings)
    try:
        JobRunner(settings, jobs, control, results).run(stop)
    finally:
        jobs.close()
        control.close()
        results.close()
        os.close(fd)
