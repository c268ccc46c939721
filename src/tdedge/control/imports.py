"""Bulk imports already accepted, by ``unique_id``: the edge's fast path for retries.

fluent-plugin-td retries a chunk with the same unique id after a timeout. A unique id
is recorded here after its records are durable in the journal, so a retry that finds
it is answered at once, without inflating or journaling the body again.

This ledger is not what guarantees exactly-once: the loader is (loader/imports.py).
When a process is killed between the append and the record, or two uploads of one id
race, the chunk is journaled twice and the loader drops the second copy.
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control.store import create_tables

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
# What ``forget`` deletes by; not in the table's definition, so that a control store
# made before it existed gets it too.
_CREATED_AT = "CREATE INDEX IF NOT EXISTS bulk_imports_created_at ON bulk_imports (created_at)"


class Imported(msgspec.Struct, frozen=True):
    md5_hex: str
    records: int


class ImportLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        create_tables(metadata, engine, then=[_CREATED_AT])

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
        values = {
            "account_id": account_id,
            "database": database,
            "table": table,
            "unique_id": unique_id,
            "md5_hex": imported.md5_hex,
            "records": imported.records,
            "created_at": now,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(bulk_imports).values(**values))
        except sa.exc.IntegrityError:
            pass  # a concurrent upload of the same chunk recorded it first

    def forget(self, before: float) -> int:
        """Delete the ids recorded before ``before`` (``bulk_import_retention_s``, as the
        loader forgets its own): a retry of one is journaled again, and the loader
        decides. How many went."""
        query = sa.delete(bulk_imports).where(bulk_imports.c.created_at < before)
        with self._engine.begin() as conn:
            return int(conn.execute(query).rowcount)
