"""Bulk imports already loaded, by account and ``unique_id``: the edge's fast path for
retries.

fluent-plugin-td retries a chunk with the same unique id after a timeout. The loader
records a unique id here once it has loaded the upload (its rows, or import errors for
records refused one by one), so a retry that finds it is answered at once, without
inflating or journaling the body again. An upload refused whole (its key revoked, its
database gone) is never recorded: a retry with a good key is journaled and loads.

This ledger is not what guarantees exactly-once: the loader is (loader/imports.py).
A retry that arrives before the loader has recorded the id is journaled again, and
the loader drops that copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control import schema
from tdedge.control.store import insert_ignoring_duplicates

metadata = sa.MetaData()

bulk_imports = sa.Table(
    "bulk_imports",
    metadata,
    sa.Column("account_id", sa.Integer, primary_key=True),
    sa.Column("database", sa.String(128), primary_key=True),
    sa.Column("table", sa.String(128), primary_key=True),
    sa.Column("unique_id", sa.String(128), primary_key=True),
    sa.Column("md5_hex", sa.String(32), nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
# What ``forget`` deletes by.
sa.Index("bulk_imports_created_at", bulk_imports.c.created_at)


class Imported(msgspec.Struct, frozen=True):
    # Empty when the loader recorded it: it never sees the body. A retry is answered
    # with the MD5 of its own body, which is what TD answers too.
    md5_hex: str
    records: int


class ImportLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        schema.ensure(engine)

    def _key(self, account_id: int, database: str, table: str, unique_id: str) -> Any:
        t = bulk_imports.c
        return sa.and_(
            t.account_id == account_id,
            t.database == database,
            t.table == table,
            t.unique_id == unique_id,
        )

    def find(self, account_id: int, database: str, table: str, unique_id: str) -> Imported | None:
        query = sa.select(bulk_imports.c.md5_hex, bulk_imports.c.records).where(
            self._key(account_id, database, table, unique_id)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Imported(str(row.md5_hex), int(row.records))

    def record(
        self,
        account_id: int,
        database: str,
        table: str,
        unique_id: str,
        imported: Imported,
        now: float,
    ) -> None:
        self.record_many([(account_id, database, table, unique_id, imported)], now)

    def record_many(
        self, loaded: Sequence[tuple[int, str, str, str, Imported]], now: float
    ) -> None:
        """Record uploads the loader has loaded, in one transaction; ids recorded
        already keep their first row (a later part of the same upload, say)."""
        if not loaded:
            return
        rows = [
            {
                "account_id": account_id,
                "database": database,
                "table": table,
                "unique_id": unique_id,
                "md5_hex": imported.md5_hex,
                "records": imported.records,
                "created_at": now,
            }
            for account_id, database, table, unique_id, imported in loaded
        ]
        with self._engine.begin() as conn:
            conn.execute(insert_ignoring_duplicates(conn, bulk_imports), rows)

    def forget(self, before: float) -> int:
        """Delete the ids recorded before ``before`` (``bulk_import_retention_s``, as the
        loader forgets its own): a retry of one is journaled again, and the loader
        decides. How many went."""
        query = sa.delete(bulk_imports).where(bulk_imports.c.created_at < before)
        with self._engine.begin() as conn:
            return int(conn.execute(query).rowcount)
