"""The control tables, copied from the data dir's SQLite files into the shared control
database: every table of the control schema (accounts, API keys as their hashes,
databases, jobs, the import ledger, retention rules, the p13n configurations, services
and tokens), and the bulk-import sessions, which the embedded default keeps in a file
of their own (backends.bulk_sessions).

Both sides are first brought to this tdedge's schema revision (the source in its
staged copy), so the rows fit column for column. The copy is one transaction, into a
database none of whose tables holds a row: anything there is refused, never merged.
Ids keep their values; PostgreSQL's sequences are then moved past them, so the next
job or session gets the next number.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.config import Settings
from tdedge.control import schema
from tdedge.control.jobs import jobs
from tdedge.control.store import engine_for, sqlite_engine
from tdedge.migration.snapshot import MigrationError

# Alembic's own table: each side has its revision already.
_NOT_COPIED = frozenset({"alembic_version"})
# The tables the embedded default keeps in bulk_sessions.sqlite instead.
_SESSION_TABLES = ("bulk_sessions", "bulk_session_parts")
_CHUNK = 1_000


def _tables(engine: Engine) -> sa.MetaData:
    meta = sa.MetaData()
    meta.reflect(engine)
    return meta


def target_rows(target: Settings) -> dict[str, int]:
    """The control tables of the target that hold rows, and how many."""
    engine = engine_for(target.control_url)
    try:
        schema.ensure(engine)
        found: dict[str, int] = {}
        with engine.connect() as conn:
            for table in _tables(engine).sorted_tables:
                if table.name in _NOT_COPIED:
                    continue
                n = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
                if n:
                    found[table.name] = n
        return found
    except sa.exc.SQLAlchemyError as e:
        raise MigrationError(f"cannot read the target control database: {e}") from e
    finally:
        engine.dispose()


def job_attempts(staged: Settings) -> dict[int, int]:
    """Each job of the staged control database and the attempt it is at, which names
    its result on the object store."""
    engine = sqlite_engine(staged.control_db)
    try:
        schema.ensure(engine)
        with engine.connect() as conn:
            return {int(i): int(a) for i, a in conn.execute(sa.select(jobs.c.id, jobs.c.attempts))}
    finally:
        engine.dispose()


def copy_control(staged: Settings, target: Settings) -> dict[str, int]:
    """Copy the staged control tables and bulk sessions into the target's control
    database (empty); the rows copied per table."""
    source = sqlite_engine(staged.control_db)
    sessions = sqlite_engine(staged.bulk_sessions_db) if staged.bulk_sessions_db.is_file() else None
    engine = engine_for(target.control_url)
    counts: dict[str, int] = {}
    try:
        schema.ensure(source)
        schema.ensure(engine)
        into = _tables(engine)
        found = _tables(source)
        from_sessions = _tables(sessions) if sessions is not None else sa.MetaData()
        with engine.begin() as conn:
            for table in into.sorted_tables:
                if table.name in _NOT_COPIED:
                    continue
                origin, where = found, source
                if table.name in _SESSION_TABLES and sessions is not None:
                    origin, where = from_sessions, sessions
                if table.name not in origin.tables:
                    continue
                counts[table.name] = _copy(where, origin.tables[table.name], conn, table)
            if conn.dialect.name == "postgresql":
                _advance_sequences(conn, into)
    except sa.exc.SQLAlchemyError as e:
        raise MigrationError(f"cannot copy the control tables: {e}") from e
    finally:
        engine.dispose()
        source.dispose()
        if sessions is not None:
            sessions.dispose()
    return counts


def _copy(source: Engine, table: sa.Table, conn: sa.Connection, into: sa.Table) -> int:
    total = 0
    columns = [c.name for c in into.columns if c.name in table.columns]
    for rows in _chunks(source, table, columns):
        conn.execute(sa.insert(into), rows)
        total += len(rows)
    return total


def _chunks(
    source: Engine, table: sa.Table, columns: list[str]
) -> Iterator[list[dict[str, object]]]:
    with source.connect() as conn:
        result = conn.execution_options(yield_per=_CHUNK).execute(
            sa.select(*(table.c[name] for name in columns))
        )
        for part in result.partitions():
            yield [dict(row._mapping) for row in part]


def _advance_sequences(conn: sa.Connection, meta: sa.MetaData) -> None:
    """Move each serial column's sequence past the ids copied in."""
    for table in meta.sorted_tables:
        for column in table.primary_key.columns:
            sequence = conn.execute(
                sa.select(sa.func.pg_get_serial_sequence(table.name, column.name))
            ).scalar()
            if sequence is None:
                continue
            highest = conn.execute(sa.select(sa.func.max(column))).scalar()
            if highest is not None:
                conn.execute(sa.select(sa.func.setval(sequence, highest)))
