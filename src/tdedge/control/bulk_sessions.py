"""Bulk Import sessions and their parts, as TD's Bulk Import API keeps them.

A session is created for one table, takes parts (gzipped msgpack records, each stored as
uploaded) until it is frozen, is performed (its records counted, valid or not) and is
committed: its records are then journaled once, and the loader loads them once
(api/bulk_sessions.py). Statuses, as td-client names them::

    uploading ──freeze/perform──▶ ready ──commit──▶ committing ──loaded──▶ committed
        ▲                           │
        └──────────unfreeze─────────┘

(``performing`` exists in TD while its perform job runs; here a perform is counted in
its request, so a session passes through it only inside one transaction.)

Embedded, everything lives in one SQLite file of the data dir, apart from the control
database:
a part is up to ``bulk_part_max_bytes``, and writing it must not hold the lock that
keys, databases and jobs are written under. ``synchronous=FULL``: a part is durable when
the transaction that stored it returns. Every change of status is one conditional
UPDATE, so two workers racing on one session never both win; a write that a limit
refuses is counted after it, in its transaction (it holds SQLite's write lock, so a
racing write is counted too), and rolled back. On a shared (PostgreSQL) control
database the same tables live there, parts as bytea, so every node sees every session
and its parts (backends.bulk_sessions); the limit counts then take the account's
advisory lock in turn (_account_turn).

Times are unix seconds, passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tdedge import wal
from tdedge.control import schema
from tdedge.control.store import create_tables
from tdedge.errors import AlreadyExists, ControlError, LimitReached, NotFound

Status = Literal["uploading", "performing", "ready", "committing", "committed"]

# Reason codes of refusals (REST answers; docs/bulk-import.md).
SESSION_LIMIT = "bulk_session_limit"
PART_LIMIT = "bulk_part_limit"
STORAGE_LIMIT = "bulk_storage_limit"
SESSION_FROZEN = "session_frozen"
SESSION_NOT_FROZEN = "session_not_frozen"
NOT_PERFORMED = "session_not_performed"
SESSION_COMMITTED = "session_committed"

# Advisory lock keys of the accounts' session limits (_account_turn) start here.
BULK_LOCK_SPACE = 0x7464_0001 << 32

metadata = sa.MetaData()

sessions = sa.Table(
    "bulk_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("database", sa.String(128), nullable=False),
    sa.Column("table", sa.String(128), nullable=False),
    # The id the session's records are journaled under (Envelope.import_id): the
    # loader loads one (account, database, table, token) once, however many commits.
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("frozen", sa.Boolean, nullable=False),
    sa.Column("job_id", sa.BigInteger, nullable=True),
    sa.Column("valid_records", sa.BigInteger, nullable=True),
    sa.Column("error_records", sa.BigInteger, nullable=True),
    sa.Column("valid_parts", sa.BigInteger, nullable=True),
    sa.Column("error_parts", sa.BigInteger, nullable=True),
    # The last commit's token (Envelope.import_attempt) and whether its records are
    # in the journal: a commit retried after that is answered at once.
    sa.Column("attempt", sa.String(32), nullable=True),
    sa.Column("published", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("account_id", "name"),
    sqlite_autoincrement=True,
)
sa.Index("bulk_sessions_updated", sessions.c.updated_at)

parts = sa.Table(
    "bulk_session_parts",
    metadata,
    sa.Column("session_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("error_records", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Last: reading the columns before it never reads its overflow pages.
    sa.Column("body", sa.LargeBinary, nullable=False),
)


class Session(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    account_id: int
    name: str
    database: str
    table: str
    token: str
    status: Status
    frozen: bool
    job_id: int | None
    valid_records: int | None
    error_records: int | None
    valid_parts: int | None
    error_parts: int | None
    attempt: str | None
    published: bool
    created_at: float
    updated_at: float

    @property
    def performed(self) -> bool:
        return self.status in ("ready", "committing", "committed")

    @property
    def expected(self) -> int:
        """The records a commit journals: every counted one, valid or not."""
        return (self.valid_records or 0) + (self.error_records or 0)


class PartInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    bytes: int
    records: int
    error_records: int


class WrongStatus(ControlError):
    """The session's status does not allow the request; ``code`` says which way."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # Before any table exists (a no-op after): pages freed by deleted parts go back to
    # the file system at each expiry (``incremental_vacuum``), not only to later parts.
    # Writers queue behind one storing a large part.
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    wal.enter(cur)
    cur.execute("PRAGMA synchronous=FULL")
    # A checkpointed WAL is cut back to this, not left as large as the largest part.
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


def sessions_engine(path: Path) -> Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", _pragmas)
    return engine


class BulkSessions:
    def __init__(self, engine: Engine, own_file: bool = False) -> None:
        """On the control database's ``engine`` (its schema versioned with the rest), or
        on a SQLite file of its ``own_file``."""
        self._engine = engine
        if own_file:
            create_tables(metadata, engine)
        else:
            schema.ensure(engine)

    @classmethod
    def open(cls, path: Path) -> BulkSessions:
        return cls(sessions_engine(path), own_file=True)

    def close(self) -> None:
        self._engine.dispose()

    # Sessions.
    def create(
        self,
        *,
        account_id: int,
        name: str,
        database: str,
        table: str,
        token: str,
        now: float,
        max_sessions: int,
    ) -> Session:
        values: dict[str, Any] = {
            "account_id": account_id,
            "name": name,
            "database": database,
            "table": table,
            "token": token,
            "status": "uploading",
            "frozen": False,
            "published": False,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._engine.begin() as conn:
                _account_turn(conn, account_id)
                conn.execute(sa.insert(sessions).values(**values))
                held = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(sessions)
                    .where(sessions.c.account_id == account_id)
                ).scalar_one()
                if int(held) > max_sessions:
                    raise LimitReached(
                        f"the account holds {max_sessions} bulk import sessions, as many as "
                        "it may (bulk_sessions_per_account): delete finished ones",
                        SESSION_LIMIT,
                    )
        except sa.exc.IntegrityError as e:
            raise AlreadyExists(f"bulk import session '{name}' already exists") from e
        found = self.get(account_id, name)
        assert found is not None
        return found

    def get(self, account_id: int, name: str) -> Session | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(sessions).where(
                    sessions.c.account_id == account_id, sessions.c.name == name
                )
            ).first()
        return None if row is None else _session(row)

    def find(self, account_id: int, name: str) -> Session:
        found = self.get(account_id, name)
        if found is None:
            raise NotFound(f"bulk import session '{name}' does not exist")
        return found

    def of_account(self, account_id: int) -> list[Session]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(sessions)
                .where(sessions.c.account_id == account_id)
                .order_by(sessions.c.name)
            ).all()
        return [_session(r) for r in rows]

    def delete(self, account_id: int, name: str) -> None:
        """Delete a session and its parts, whatever its status: a commit journaled
        already still loads."""
        with self._engine.begin() as conn:
            found = conn.execute(
                sa.delete(sessions)
                .where(sessions.c.account_id == account_id, sessions.c.name == name)
                .returning(sessions.c.id)
            ).first()
            if found is None:
                raise NotFound(f"bulk import session '{name}' does not exist")
            conn.execute(sa.delete(parts).where(parts.c.session_id == found.id))

    def freeze(self, account_id: int, name: str, now: float) -> Session:
        """No more parts; performed sessions are frozen already."""
        self._change(
            account_id,
            name,
            sessions.c.status == "uploading",
            {"frozen": True, "updated_at": now},
            allowed=("uploading", "ready", "committing", "committed"),
        )
        return self.find(account_id, name)

    def unfreeze(self, account_id: int, name: str, now: float) -> Session:
        """Take parts again; a performed session forgets its counts (perform again)."""
        self._change(
            account_id,
            name,
            sessions.c.status.in_(("uploading", "ready")),
            {
                "status": "uploading",
                "frozen": False,
                "valid_records": None,
                "error_records": None,
                "valid_parts": None,
                "error_parts": None,
                "updated_at": now,
            },
            allowed=(),
        )
        return self.find(account_id, name)

    def perform(self, account_id: int, name: str, now: float) -> Session:
        """Count the frozen session's records (each part's were counted on upload):
        ``ready``. Performing a ready session again counts again."""
        with self._engine.begin() as conn:
            # Written first: the transaction holds the write lock while it counts, so
            # no part can change under the count.
            done = conn.execute(
                sa.update(sessions)
                .where(
                    sessions.c.account_id == account_id,
                    sessions.c.name == name,
                    sessions.c.frozen,
                    sessions.c.status.in_(("uploading", "ready")),
                )
                .values(status="performing", updated_at=now)
                .returning(sessions.c.id)
            ).first()
            if done is None:
                raise self._not_performable(conn, account_id, name)
            counts = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(parts.c.records), 0),
                    sa.func.coalesce(sa.func.sum(parts.c.error_records), 0),
                ).where(parts.c.session_id == done.id)
            ).one()
            n_parts, records, errors = (int(v) for v in counts)
            conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == done.id)
                .values(
                    status="ready",
                    job_id=None,
                    valid_records=records - errors,
                    error_records=errors,
                    valid_parts=n_parts,
                    error_parts=0,
                    updated_at=now,
                )
            )
        return self.find(account_id, name)

    def set_job(self, session_id: int, job_id: int) -> None:
        """The job that recorded the session's perform (td-client shows its id)."""
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(sessions).where(sessions.c.id == session_id).values(job_id=job_id)
            )

    def begin_commit(self, account_id: int, name: str, attempt: str, now: float) -> Session | None:
        """Mark a performed session ``committing`` under a new ``attempt``, to be
        journaled; None when there is nothing to do (committed, or journaled by an
        earlier commit). A session left ``committing`` unjournaled (its commit failed
        or its worker died) is journaled again: the loader loads the session's token
        once (loader/imports.py)."""
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(sessions)
                .where(
                    sessions.c.account_id == account_id,
                    sessions.c.name == name,
                    sa.or_(
                        sessions.c.status == "ready",
                        sa.and_(sessions.c.status == "committing", ~sessions.c.published),
                    ),
                )
                .values(status="committing", attempt=attempt, published=False, updated_at=now)
                .returning(sessions.c.id)
            ).first()
            if done is None:
                row = self._row(conn, account_id, name)
                if row.status in ("committing", "committed"):
                    return None
                raise WrongStatus(
                    f"bulk import session '{name}' is {row.status}: perform it before "
                    "committing (freeze, perform, wait for its job)",
                    NOT_PERFORMED,
                )
        return self.find(account_id, name)

    def published(self, session_id: int, attempt: str, records: int, now: float) -> None:
        """The commit ``attempt`` journaled its ``records``; they replace the counts
        should the code that counted them on upload have counted otherwise."""
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(sessions.c.valid_records, sessions.c.error_records).where(
                    sessions.c.id == session_id, sessions.c.attempt == attempt
                )
            ).first()
            if row is None:
                return  # deleted meanwhile: the records load all the same
            values: dict[str, Any] = {"published": True, "updated_at": now}
            if (row.valid_records or 0) + (row.error_records or 0) != records:
                values["valid_records"] = records - (row.error_records or 0)
            conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id, sessions.c.attempt == attempt)
                .values(**values)
            )

    def abort_commit(self, session_id: int, attempt: str, now: float) -> None:
        """The commit ``attempt`` journaled nothing: ``ready`` again."""
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(sessions)
                .where(
                    sessions.c.id == session_id,
                    sessions.c.attempt == attempt,
                    sessions.c.status == "committing",
                    ~sessions.c.published,
                )
                .values(status="ready", attempt=None, updated_at=now)
            )

    def committed(self, session_id: int, now: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id, sessions.c.status == "committing")
                .values(status="committed", published=True, updated_at=now)
            )

    # Parts.
    def part_room(
        self, session: Session, name: str, size: int, max_parts: int, max_bytes: int
    ) -> None:
        """Refuse early (before a body is checked) a part the limits would refuse."""
        with self._engine.connect() as conn:
            self._check_room(conn, session, name, size, max_parts, max_bytes)

    def put_part(
        self,
        session: Session,
        part: PartInfo,
        body: bytes,
        now: float,
        max_parts: int,
        max_bytes: int,
    ) -> None:
        """Store a part (replacing one of the same name), durable on return."""
        with self._engine.begin() as conn:
            _account_turn(conn, session.account_id)
            self._uploading(conn, session, now)
            conn.execute(
                sa.delete(parts).where(parts.c.session_id == session.id, parts.c.name == part.name)
            )
            conn.execute(
                sa.insert(parts).values(
                    session_id=session.id,
                    name=part.name,
                    bytes=part.bytes,
                    records=part.records,
                    error_records=part.error_records,
                    created_at=now,
                    body=body,
                )
            )
            self._check_room(conn, session, None, 0, max_parts, max_bytes)

    def delete_part(self, session: Session, name: str, now: float) -> None:
        with self._engine.begin() as conn:
            self._uploading(conn, session, now)
            gone = conn.execute(
                sa.delete(parts).where(parts.c.session_id == session.id, parts.c.name == name)
            ).rowcount
            if not gone:
                raise NotFound(f"part '{name}' of bulk import session '{session.name}'")

    def part_names(self, session_id: int) -> list[str]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(parts.c.name)
                .where(parts.c.session_id == session_id)
                .order_by(parts.c.name)
            ).all()
        return [str(r.name) for r in rows]

    def bodies(self, session_id: int) -> Iterator[bytes]:
        """Each part's body as uploaded, in the order of their names, one at a time:
        a session is never held whole. Parts of a frozen session never change, so a
        part gone while they are read means the session was deleted: NotFound, rather
        than a commit of the parts read so far."""
        for name in self.part_names(session_id):
            with self._engine.connect() as conn:
                body = conn.execute(
                    sa.select(parts.c.body).where(
                        parts.c.session_id == session_id, parts.c.name == name
                    )
                ).scalar()
            if body is None:
                raise NotFound(f"the bulk import session was deleted while part {name!r} was read")
            yield bytes(body)

    # Retention.
    def expire(self, now: float, retention_s: float, expiry_s: float) -> int:
        """Delete committed sessions older than ``retention_s`` and others untouched
        for ``expiry_s``, with their parts; how many went."""
        stale = sa.or_(
            sa.and_(sessions.c.status == "committed", sessions.c.updated_at < now - retention_s),
            sessions.c.updated_at < now - expiry_s,
        )
        with self._engine.begin() as conn:
            ids = [r.id for r in conn.execute(sa.select(sessions.c.id).where(stale)).all()]
            if not ids:
                return 0
            conn.execute(sa.delete(parts).where(parts.c.session_id.in_(ids)))
            conn.execute(sa.delete(sessions).where(sessions.c.id.in_(ids)))
        if self._engine.dialect.name != "sqlite":
            return len(ids)  # PostgreSQL's autovacuum reuses the space
        # Through executescript: the pragma frees a page per step, and sqlite3's
        # execute() steps a statement that returns no rows only once.
        raw = self._engine.raw_connection()
        try:
            raw.driver_connection.executescript("PRAGMA incremental_vacuum;")  # type: ignore[union-attr]
        finally:
            raw.close()
        return len(ids)

    # Helpers.
    def _row(self, conn: sa.Connection, account_id: int, name: str) -> Any:
        row = conn.execute(
            sa.select(sessions).where(sessions.c.account_id == account_id, sessions.c.name == name)
        ).first()
        if row is None:
            raise NotFound(f"bulk import session '{name}' does not exist")
        return row

    def _change(
        self,
        account_id: int,
        name: str,
        condition: Any,
        values: dict[str, Any],
        allowed: tuple[str, ...],
    ) -> None:
        """Apply ``values`` where ``condition`` holds; a session whose status is in
        ``allowed`` is left as it is; any other is refused."""
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(sessions)
                .where(sessions.c.account_id == account_id, sessions.c.name == name, condition)
                .values(**values)
            ).rowcount
            if done:
                return
            row = self._row(conn, account_id, name)
            if row.status not in allowed:
                raise WrongStatus(
                    f"bulk import session '{name}' is {row.status}", SESSION_COMMITTED
                )

    def _not_performable(self, conn: sa.Connection, account_id: int, name: str) -> WrongStatus:
        row = self._row(conn, account_id, name)
        if row.status in ("committing", "committed"):
            return WrongStatus(f"bulk import session '{name}' is {row.status}", SESSION_COMMITTED)
        return WrongStatus(
            f"bulk import session '{name}' is not frozen: freeze it before performing",
            SESSION_NOT_FROZEN,
        )

    def _uploading(self, conn: sa.Connection, session: Session, now: float) -> None:
        """Touch the session if it takes parts (first: the transaction then holds the
        write lock); refuse otherwise."""
        done = conn.execute(
            sa.update(sessions)
            .where(
                sessions.c.id == session.id,
                sessions.c.status == "uploading",
                ~sessions.c.frozen,
            )
            .values(updated_at=now)
        ).rowcount
        if done:
            return
        found = conn.execute(sa.select(sessions.c.id).where(sessions.c.id == session.id)).first()
        if found is None:
            raise NotFound(f"bulk import session '{session.name}' does not exist")
        raise WrongStatus(
            f"bulk import session '{session.name}' is frozen: its parts cannot change "
            "(unfreeze it first)",
            SESSION_FROZEN,
        )

    def _check_room(
        self,
        conn: sa.Connection,
        session: Session,
        adding: str | None,
        size: int,
        max_parts: int,
        max_bytes: int,
    ) -> None:
        """Refuse when the session's parts (with ``adding`` of ``size`` bytes, unless it
        replaces one) or the account's bytes pass their limits."""
        names = conn.execute(
            sa.select(sa.func.count()).where(
                parts.c.session_id == session.id,
                *([] if adding is None else [parts.c.name != adding]),
            )
        ).scalar_one()
        if int(names) + (adding is not None) > max_parts:
            raise LimitReached(
                f"bulk import session '{session.name}' has {max_parts} parts, as many as "
                "it may (bulk_session_max_parts)",
                PART_LIMIT,
            )
        held = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(parts.c.bytes), 0))
            .select_from(parts.join(sessions, sessions.c.id == parts.c.session_id))
            .where(
                sessions.c.account_id == session.account_id,
                *([] if adding is None else [sa.not_(_same_part(session.id, adding))]),
            )
        ).scalar_one()
        if int(held) + size > max_bytes:
            raise LimitReached(
                f"the account's bulk import sessions hold {int(held)} bytes of parts; this "
                f"part would pass bulk_account_max_bytes ({max_bytes}): commit or delete "
                "sessions first",
                STORAGE_LIMIT,
            )


def _account_turn(conn: sa.Connection, account_id: int) -> None:
    """Writes one account's limits count take turns, until the transaction ends. SQLite's
    write lock, taken by the first write, does it already; on PostgreSQL two writers
    would each count before the other's insert is visible, so they take an advisory
    lock of the account's (the high bits keep it apart from other advisory locks)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(BULK_LOCK_SPACE + account_id)))


def _same_part(session_id: int, name: str) -> Any:
    return sa.and_(parts.c.session_id == session_id, parts.c.name == name)


def _session(row: Any) -> Session:
    return Session(**{c.name: getattr(row, c.name) for c in sessions.columns})
