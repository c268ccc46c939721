"""Leases: one holder at a time for a named task of the cluster, for a bounded time.

A row per lease (name, holder, expiry) in the control database, taken and renewed by
compare-and-set: an UPDATE that matches only while the row is this holder's or has
expired, else an INSERT that loses to a row already there. Both databases make that
atomic (PostgreSQL re-checks the condition on the row another transaction just
changed; SQLite runs one writer at a time). A holder that dies stops renewing: any other
takes the lease once it expires, so the takeover is bounded by ``ttl_s``.

A row rather than PostgreSQL's advisory locks: the same code works on the embedded
SQLite database; an advisory lock is held by a connection, which a pool does not keep
and a half-dead node can keep open for as long as TCP takes to notice; and the row
shows an operator who holds the lease and until when.

Times are the nodes' clocks (as the job leases'): nodes are expected to run NTP; a
skew shortens or lengthens a takeover by that much, it never lets two hold at once for
longer than that.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control import schema
from tdedge.control.store import insert_ignoring_duplicates

log = logging.getLogger("tdedge.control")

metadata = sa.MetaData()

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


class Held(msgspec.Struct, frozen=True):
    holder: str
    expires_at: float


def holder_id() -> str:
    """This process's name as a holder: host and pid (for the operator), and a random
    part so that a restarted process with a reused pid is another holder."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, engine: Engine, name: str, holder: str, ttl_s: float) -> None:
        schema.ensure(engine)
        self._engine = engine
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s

    def hold(self, now: float | None = None) -> bool:
        """Take the lease or renew it; True while this holder has it."""
        now = time.time() if now is None else now
        until = now + self.ttl_s
        with self._engine.begin() as conn:
            renewed = conn.execute(
                sa.update(leases)
                .where(
                    leases.c.name == self.name,
                    sa.or_(leases.c.holder == self.holder, leases.c.expires_at < now),
                )
                .values(holder=self.holder, expires_at=until)
            )
            if renewed.rowcount == 1:
                return True
            # RETURNING, not rowcount: psycopg gives no count for an INSERT that
            # ON CONFLICT may skip.
            taken = conn.execute(
                insert_ignoring_duplicates(conn, leases)
                .values(name=self.name, holder=self.holder, expires_at=until)
                .returning(leases.c.name)
            )
            return taken.first() is not None

    def release(self) -> None:
        """Give the lease up now (a clean stop), so another takes it at once."""
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(leases)
                .where(leases.c.name == self.name, leases.c.holder == self.holder)
                .values(expires_at=0.0)
            )

    def current(self) -> Held | None:
        """Who holds the lease and until when (None: never taken)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(leases.c.holder, leases.c.expires_at).where(leases.c.name == self.name)
            ).first()
        return None if row is None else Held(row.holder, row.expires_at)


class Keeper:
    """Holds a lease from a thread of its own, so that work done under it (however long
    one step takes) never lets it run out: tries to take or renew it every third of its
    time. ``held`` is true only while the last success is younger than the lease's
    time, by this process's monotonic clock: a keeper that cannot reach the database
    stops claiming the lease before another can take it."""

    def __init__(self, lease: Lease, stop: threading.Event) -> None:
        self.lease = lease
        self._stop = stop
        self._valid_until = 0.0
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.name}", daemon=True)

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def _run(self) -> None:
        holding = False
        while True:
            tried = time.monotonic()
            try:
                now = self.lease.hold()
            except sa.exc.SQLAlchemyError as e:
                log.warning("lease not renewed", extra={"lease": self.lease.name, "error": str(e)})
                now = False
            self._valid_until = tried + self.lease.ttl_s if now else 0.0
            if now != holding:
                holding = now
                log.info(
                    "lease taken" if now else "lease lost",
                    extra={"lease": self.lease.name, "holder": self.lease.holder},
                )
            if self._stop.wait(self.lease.ttl_s / 3):
                break
        if holding:
            self._valid_until = 0.0
            try:
                self.lease.release()  # a clean stop hands it on at once
            except sa.exc.SQLAlchemyError as e:
                log.warning("lease not released", extra={"lease": self.lease.name, "error": str(e)})

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)
