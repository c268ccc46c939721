"""The control plane: accounts, API keys (hashed) and databases — SQLAlchemy Core.

Embedded: one SQLite file in WAL mode, shared by the CLI, the edge workers and the
loader. Scale-out: the same tables on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tdedge.control import schema
from tdedge.control.keys import KeyInfo, KeyType, hash_key, key_id, new_key
from tdedge.control.pragmas import sqlite_pragmas
from tdedge.errors import AlreadyExists, ControlError, InvalidName, LimitReached, NotFound
from tdedge.names import NAME_RULE, is_reserved, is_valid_name, normalize

# Drawing a new account id again after another process took the same one.
ID_ATTEMPTS = 20
# The reason code of a database refused by the limit (REST answers, import errors).
DATABASE_LIMIT = "database_limit"

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("key_id", sa.String(12), nullable=False, unique=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("type", sa.String(8), nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

databases = sa.Table(
    "databases",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


class DatabaseInfo(msgspec.Struct, frozen=True):
    name: str
    account_id: int
    created_at: int


def create_tables(
    meta: sa.MetaData, engine: Engine, attempts: int = 5, then: Sequence[str] = ()
) -> None:
    """``create_all`` that tolerates a race: worker processes start together, each may
    check first and then lose the CREATE to another (the next attempt sees the table),
    and SQLite may answer "database is locked" at once while another process switches
    the file to WAL, which no busy timeout covers. ``then``: DDL run after it (``IF NOT
    EXISTS`` statements: create_all skips a table that exists, indexes and all)."""
    for attempt in range(attempts):
        try:
            meta.create_all(engine)
            with engine.begin() as conn:
                for ddl in then:
                    conn.exec_driver_sql(ddl)
            return
        except sa.exc.OperationalError as e:
            racing = "already exists" in str(e) or "database is locked" in str(e)
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def insert_ignoring_duplicates(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that skips rows whose key is there already, in the connection's
    dialect (SQLite's and PostgreSQL's ``ON CONFLICT DO NOTHING``)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


def engine_for(url: str) -> Engine:
    """The control database at ``url``: ``sqlite:///<path>`` (the embedded default, a file
    in the data dir) or ``postgresql://…`` (shared by several nodes; driven by psycopg)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database, "a SQLite control database is a file"
        return sqlite_engine(Path(parsed.database))
    if parsed.get_backend_name() == "postgresql":
        # pre_ping: a node outlives its database's restarts and failovers.
        return sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    raise ValueError(f"unsupported control database {parsed.drivername!r}: sqlite or postgresql")


def sqlite_engine(path: Path) -> Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", sqlite_pragmas)
    return engine


class ControlStore:
    """``max_databases_per_account``: how many databases ``create_database`` lets one
    account have (Settings.max_databases_per_account); None for no limit."""

    def __init__(self, engine: Engine, max_databases_per_account: int | None = None) -> None:
        self._engine = engine
        self._max_databases = max_databases_per_account
        schema.ensure(engine)

    @classmethod
    def open(cls, path: Path, max_databases_per_account: int | None = None) -> ControlStore:
        return cls(sqlite_engine(path), max_databases_per_account)

    @classmethod
    def connect(cls, url: str, max_databases_per_account: int | None = None) -> ControlStore:
        return cls(engine_for(url), max_databases_per_account)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # Accounts.
    def account_count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one())

    def create_account(self, account_id: int | None = None) -> int:
        """Create account ``account_id``, or the next after the highest so far. Ids are
        drawn, not taken from a sequence: accounts are also created with the id a key
        names (``ensure_account``), which a PostgreSQL sequence would not know of."""
        for _ in range(ID_ATTEMPTS):
            try:
                with self._engine.begin() as conn:
                    new_id = account_id
                    if new_id is None:
                        highest = conn.execute(sa.select(sa.func.max(accounts.c.id))).scalar()
                        new_id = int(highest or 0) + 1
                    conn.execute(sa.insert(accounts).values(id=new_id, created_at=int(time.time())))
                    return new_id
            except sa.exc.IntegrityError:
                if account_id is not None:
                    raise AlreadyExists(f"account {account_id} already exists") from None
                # Another process drew the same id first: draw again.
        raise ControlError("could not draw a new account id; try again")

    def ensure_account(self, account_id: int) -> None:
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id))
            if found.first() is not None:
                return
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(accounts).values(id=account_id, created_at=int(time.time())))
        except sa.exc.IntegrityError:
            # Another worker or process created it between the look and the insert (two
            # first requests of a new account at once): it exists, as asked.
            pass

    # Keys.
    def create_key(self, account_id: int, type: KeyType) -> str:
        """Return a new key: only its hash is kept, so this is the one chance to see it."""
        self.ensure_account(account_id)
        key = new_key(account_id)
        digest = hash_key(key)
        with self._engine.begin() as conn:
            conn.execute(
                sa.insert(api_keys).values(
                    key_hash=digest,
                    key_id=key_id(digest),
                    account_id=account_id,
                    type=type,
                    revoked=False,
                    created_at=int(time.time()),
                )
            )
        return key

    def list_keys(self) -> list[KeyInfo]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_key_info(r) for r in rows]

    def revoke_key(self, ident: str) -> None:
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(api_keys).where(api_keys.c.key_id == ident).values(revoked=True)
            )
            if done.rowcount == 0:
                raise NotFound(f"no key with id {ident}")

    def keys_by_hash(self) -> dict[bytes, KeyInfo]:
        """Every key, for in-memory caches (the edge's sync auth, the loader)."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys)).all()
        return {bytes(r.key_hash): _key_info(r) for r in rows}

    def key_by_hash(self, key_hash: bytes) -> KeyInfo | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
        return None if row is None else _key_info(row)

    # Databases.
    def create_database(self, name: str, account_id: int) -> DatabaseInfo:
        if not is_valid_name(name):
            raise InvalidName(f"invalid database name {name!r}: {NAME_RULE}")
        if is_reserved(name):
            raise InvalidName(f"database name {name!r} is reserved for tdedge")
        name = normalize(name)
        self.ensure_account(account_id)
        info = DatabaseInfo(name=name, account_id=account_id, created_at=int(time.time()))
        try:
            with self._engine.begin() as conn:
                # Creations for one account take turns: the account's row is locked
                # (PostgreSQL; SQLite's write lock, taken by the insert, does the same).
                conn.execute(
                    sa.select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
                )
                conn.execute(sa.insert(databases).values(**msgspec.structs.asdict(info)))
                if self._over_limit(conn, account_id):
                    # Counted after the insert, in its transaction (rolled back by the
                    # raise), so a creation racing this one counts it.
                    raise LimitReached(
                        f"account {account_id} has {self._max_databases} databases, as many "
                        "as it may have (max_databases_per_account)",
                        DATABASE_LIMIT,
                    )
        except sa.exc.IntegrityError as e:
            raise AlreadyExists(f"database {name} already exists") from e
        return info

    def _over_limit(self, conn: sa.Connection, account_id: int) -> bool:
        if self._max_databases is None:
            return False
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(databases)
            .where(databases.c.account_id == account_id)
        ).scalar_one()
        return int(count) > self._max_databases

    def list_databases(self) -> list[DatabaseInfo]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(databases).order_by(databases.c.name)).all()
        return [
            DatabaseInfo(name=r.name, account_id=r.account_id, created_at=r.created_at)
            for r in rows
        ]

    def database_owner(self, name: str) -> int | None:
        with self._engine.connect() as conn:
            found = conn.execute(
                sa.select(databases.c.account_id).where(databases.c.name == name)
            ).scalar()
        return None if found is None else int(found)

    def database_owners(self) -> dict[str, int]:
        return {d.name: d.account_id for d in self.list_databases()}


def _key_info(row: Any) -> KeyInfo:
    return KeyInfo(
        key_id=row.key_id,
        account_id=row.account_id,
        type=row.type,
        revoked=bool(row.revoked),
        created_at=row.created_at,
    )
