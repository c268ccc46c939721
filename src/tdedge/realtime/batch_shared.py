"""Batch facts on the shared control database, and each node's copy of them.

With several nodes on one control database (PostgreSQL) the batch segments and
imported attributes are computed once, by the node whose refresher holds the lease
(``refresh.py``), into ``SharedBatchStore``. Every node's refresher copies what changed
into its data dir's SQLite file (``Replica``), which its edge reads: a decision never
waits on the network, and its cache check stays a ``PRAGMA data_version``. A source's
``facts_version`` changes with each replace, so a copy moves only the sources whose
facts changed; a node that starts copies every source once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control import schema
from tdedge.control.leases import Lease
from tdedge.realtime.batch import (
    SEGMENT,
    BatchStore,
    SourceState,
    SQLiteBatchStore,
    facts_of,
)
from tdedge.realtime.errors import BatchStoreDown
from tdedge.realtime.service import Facts

# Rows sent to the database per statement when a source is replaced or copied: large
# segments go in pieces, never all in memory at once.
CHUNK = 5_000

metadata = sa.MetaData()

facts_table = sa.Table(
    "p13n_batch_facts",
    metadata,
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),  # column=value, as in the profile store
    sa.Column("kind", sa.String(16), primary_key=True),  # segment | attribute
    sa.Column("name", sa.String(128), primary_key=True),  # segment id or attribute name
    sa.Column("value", sa.LargeBinary, nullable=True),  # attribute value, JSON
    sa.Index("p13n_batch_facts_by_source", "service", "kind", "name"),
)

sources_table = sa.Table(
    "p13n_batch_sources",
    metadata,
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("refreshed_ms", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("facts_version", sa.String(32), nullable=False),  # new with each replace
    sa.Column("refreshed_by", sa.String(128), nullable=True),  # the lease holder
)

_json = msgspec.json.Encoder()
_COLUMNS = (
    sources_table.c.service,
    sources_table.c.kind,
    sources_table.c.name,
    sources_table.c.sql,
    sources_table.c.refreshed_ms,
    sources_table.c.rows,
    sources_table.c.error,
    sources_table.c.refreshed_by,
)


def _upsert(conn: sa.Connection, table: sa.Table) -> Any:
    """The connection's dialect's INSERT, which has ``on_conflict_do_update``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _of(source: Any) -> Any:
    return sa.and_(
        source.c.service == sa.bindparam("service"),
        source.c.kind == sa.bindparam("kind"),
        source.c.name == sa.bindparam("name"),
    )


class SharedBatchStore:
    """The batch store on the control database (any SQLAlchemy engine; PostgreSQL when
    nodes share it). ``node``: this process's name, recorded with the facts it computes."""

    def __init__(self, engine: Engine, node: str = "", owns_engine: bool = True) -> None:
        self._engine = engine
        self._node = node
        self._owns_engine = owns_engine
        try:
            schema.ensure(engine)
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store unavailable: {e}") from e

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def cached_facts(self, service: str, keys: Sequence[str], now_ms: int) -> Facts:
        """``facts``, read each time: the edge reads its node's copy, not this store."""
        return self.facts(service, keys)

    def facts(self, service: str, keys: Sequence[str]) -> Facts:
        if not keys:
            return Facts()
        t = facts_table
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.select(t.c.kind, t.c.name, t.c.value).where(
                        t.c.service == service, t.c.key.in_(list(keys))
                    )
                ).all()
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store unavailable: {e}") from e
        return facts_of(rows)

    def replace(
        self,
        service: str,
        kind: str,
        name: str,
        sql: str,
        rows: Iterable[tuple[str, Any]],
        now_ms: int,
    ) -> int:
        """Swap a source's facts for ``rows`` (key, value) in one transaction; returns
        how many rows were given (a key given twice keeps its last value)."""
        where = {"service": service, "kind": kind, "name": name}
        encoded = ((key, None if kind == SEGMENT else _json.encode(value)) for key, value in rows)
        count = 0
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(facts_table).where(_of(facts_table)), where)
                while chunk := list(islice(encoded, CHUNK)):
                    count += len(chunk)
                    conn.execute(self._facts_insert(conn), self._params(where, chunk))
                version = uuid.uuid4().hex
                values = {
                    **where,
                    "sql": sql,
                    "refreshed_ms": now_ms,
                    "rows": count,
                    "error": None,
                    "facts_version": version,
                    "refreshed_by": self._node or None,
                }
                insert = _upsert(conn, sources_table).values(**values)
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=["service", "kind", "name"],
                        set_={k: v for k, v in values.items() if k not in where},
                    )
                )
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store write failed: {e}") from e
        return count

    @staticmethod
    def _facts_insert(conn: sa.Connection) -> Any:
        # A key given twice in a source keeps its last value, as in the SQLite store.
        insert = _upsert(conn, facts_table)
        return insert.on_conflict_do_update(
            index_elements=["service", "key", "kind", "name"],
            set_={"value": insert.excluded.value},
        )

    @staticmethod
    def _params(
        where: dict[str, str], chunk: list[tuple[str, bytes | None]]
    ) -> list[dict[str, Any]]:
        # One statement may not touch a row twice (PostgreSQL): the last of a key wins.
        last = dict(chunk)
        return [{**where, "key": key, "value": value} for key, value in last.items()]

    def failed(self, service: str, kind: str, name: str, sql: str, error: str, now_ms: int) -> None:
        """Record a failed refresh; the facts loaded before stay in force."""
        values = {
            "service": service,
            "kind": kind,
            "name": name,
            "sql": sql,
            "refreshed_ms": now_ms,
            "rows": 0,
            "error": error[:2000],
            "facts_version": "",
            "refreshed_by": self._node or None,
        }
        try:
            with self._engine.begin() as conn:
                insert = _upsert(conn, sources_table).values(**values)
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=["service", "kind", "name"],
                        set_={
                            "error": insert.excluded.error,
                            "refreshed_ms": insert.excluded.refreshed_ms,
                            "refreshed_by": insert.excluded.refreshed_by,
                        },
                    )
                )
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store write failed: {e}") from e

    def sources(self) -> list[SourceState]:
        return [state for state, _ in self.versions()]

    def versions(self) -> list[tuple[SourceState, str]]:
        """Every source's state and the version of its facts."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.select(*_COLUMNS, sources_table.c.facts_version).order_by(
                        sources_table.c.service, sources_table.c.kind, sources_table.c.name
                    )
                ).all()
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store unavailable: {e}") from e
        return [(SourceState(*row[:-1]), row[-1]) for row in rows]

    def rows(self, service: str, kind: str, name: str) -> Iterator[tuple[str, bytes | None]]:
        """A source's facts (key, encoded value), read in pieces."""
        t = facts_table
        query = sa.select(t.c.key, t.c.value).where(
            t.c.service == service, t.c.kind == kind, t.c.name == name
        )
        try:
            with self._engine.connect() as conn:
                result = conn.execution_options(yield_per=CHUNK).execute(query)
                yield from ((key, value) for key, value in result)
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store unavailable: {e}") from e

    def forget(self, keep: set[tuple[str, str, str]]) -> None:
        """Drop the facts of sources no longer configured."""
        gone = [
            {"service": s.service, "kind": s.kind, "name": s.name}
            for s in self.sources()
            if (s.service, s.kind, s.name) not in keep
        ]
        if not gone:
            return
        try:
            with self._engine.begin() as conn:
                for where in gone:
                    conn.execute(sa.delete(facts_table).where(_of(facts_table)), where)
                    conn.execute(sa.delete(sources_table).where(_of(sources_table)), where)
        except sa.exc.SQLAlchemyError as e:
            raise BatchStoreDown(f"batch store write failed: {e}") from e


class Replica:
    """A node's copy of the shared facts, in its data dir's SQLite file (which its
    edge reads). ``sync`` moves what changed since the last one."""

    def __init__(self, shared: SharedBatchStore, local: SQLiteBatchStore) -> None:
        self._shared = shared
        self._local = local
        self._copied: dict[tuple[str, str, str], str] = {}  # facts versions copied

    def sync(self) -> int:
        """Copy the sources whose facts changed, and the states that did; drop the
        sources the shared store no longer has. Returns how many sources' facts moved."""
        remote = {(s.service, s.kind, s.name): (s, v) for s, v in self._shared.versions()}
        self._local.forget(set(remote))
        local = {(s.service, s.kind, s.name): s for s in self._local.sources()}
        moved = 0
        for key, (state, version) in remote.items():
            mine = msgspec.structs.replace(state, refreshed_by=None)
            if self._copied.get(key) != version:
                self._local.install(mine, self._shared.rows(*key) if version else [])
                self._copied[key] = version
                moved += 1
            elif local.get(key) != mine:
                self._local.install(mine, None)
        for key in set(self._copied) - set(remote):
            del self._copied[key]
        return moved

    def close(self) -> None:
        self._local.close()


class RefreshStores(msgspec.Struct):
    """What a node's refresher works on: the store refreshes write to, and on a shared
    control database this node's copy and the lease that says which node computes."""

    store: BatchStore
    replica: Replica | None = None
    lease: Lease | None = None

    def close(self) -> None:
        self.store.close()
        if self.replica is not None:
            self.replica.close()
