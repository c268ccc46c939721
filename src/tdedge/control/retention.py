"""Per-table retention: how many days of rows (by their ``time`` column) a table keeps.

Set by the operator (``tdedge table retention``), kept in the control store, and
applied by the loader, the lake's only regular writer: each compaction pass deletes
the rows of these tables older than their retention (Lake.compaction). A table
without a row here keeps its rows for good. Dropping a table or its database forgets
its retention, so a table made again later under the same name starts without one.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control import schema

metadata = sa.MetaData()

table_retention = sa.Table(
    "table_retention",
    metadata,
    sa.Column("database_name", sa.String(128), primary_key=True),
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("days", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

DAY_S = 86400


class Retention(NamedTuple):
    database: str
    table: str
    days: int

    def cutoff(self, now: float) -> int:
        """Rows whose ``time`` is before this (unix seconds) are past the retention."""
        return int(now - self.days * DAY_S)


class RetentionRules:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        schema.ensure(engine)

    def set(self, database: str, table: str, days: int | None) -> None:
        """Keep ``days`` days of the table's rows; None: keep them all."""
        with self._engine.begin() as conn:
            self._delete(conn, database, table)
            if days is not None:
                conn.execute(
                    sa.insert(table_retention).values(
                        database_name=database,
                        table_name=table,
                        days=days,
                        updated_at=int(time.time()),
                    )
                )

    def get(self, database: str, table: str) -> int | None:
        with self._engine.connect() as conn:
            found = conn.execute(
                sa.select(table_retention.c.days).where(
                    table_retention.c.database_name == database,
                    table_retention.c.table_name == table,
                )
            ).scalar()
        return None if found is None else int(found)

    def all(self) -> list[Retention]:
        t = table_retention
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.database_name, t.c.table_name, t.c.days).order_by(
                    t.c.database_name, t.c.table_name
                )
            ).all()
        return [Retention(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def forget_table(self, database: str, table: str) -> None:
        with self._engine.begin() as conn:
            self._delete(conn, database, table)

    def forget_database(self, database: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(table_retention).where(table_retention.c.database_name == database)
            )

    @staticmethod
    def _delete(conn: sa.Connection, database: str, table: str) -> None:
        conn.execute(
            sa.delete(table_retention).where(
                table_retention.c.database_name == database,
                table_retention.c.table_name == table,
            )
        )
