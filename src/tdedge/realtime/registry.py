"""The p13n control plane: applied configurations, service instances and tokens.

Tables live in the control database beside accounts and keys (SQLAlchemy Core, so the
scale-out PostgreSQL control plane gets them too). ``generation`` grows with every
change; edge workers poll it (``RegistryView``) instead of re-reading everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control import schema
from tdedge.control.store import sqlite_engine
from tdedge.errors import NotFound
from tdedge.realtime import config as config_file
from tdedge.realtime import tokens
from tdedge.realtime.config import ConfigFile
from tdedge.realtime.errors import ConfigStoreDown, TokenLimit, UnknownService
from tdedge.realtime.tokens import LookupTokenInfo, TokenInfo

Row = sa.Row[tuple[object, ...]]
T = TypeVar("T")


class _Hashed(Protocol):
    @property
    def token_hash(self) -> bytes: ...


HashedT = TypeVar("HashedT", bound=_Hashed)

metadata = sa.MetaData()

configs = sa.Table(
    "p13n_configs",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("applied_at", sa.BigInteger, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # the file as applied
    sa.Column("config", sa.LargeBinary, nullable=False),  # checked, as JSON
)

services = sa.Table(
    "p13n_services",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Integer, nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

token_table = sa.Table(
    "p13n_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("token_id", sa.String(12), nullable=False, unique=True),
    sa.Column("service", sa.String(64), nullable=False, index=True),
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("instance_id", sa.Integer, nullable=False),
    sa.Column("public", sa.Boolean, nullable=False),
    sa.Column("allow_ips", sa.Text, nullable=False),  # JSON array of CIDRs
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)

# Lookup tokens (the CDP door): each answers for one ``lookups:`` entry of a service.
lookup_token_table = sa.Table(
    "p13n_lookup_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("token_id", sa.String(12), nullable=False, unique=True),
    sa.Column("service", sa.String(64), nullable=False, index=True),
    sa.Column("lookup", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)

meta = sa.Table(
    "p13n_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
)

# First instance id handed out; Treasure Data's are numbers of this size.
FIRST_INSTANCE_ID = 10001
_cidrs = msgspec.json.Decoder(list[str])


class Applied(msgspec.Struct, frozen=True):
    version: int
    applied_at: int
    source: str
    config: ConfigFile


class Registry:
    def __init__(self, engine: Engine, owns_engine: bool = False) -> None:
        """On ``engine``, which ``close`` disposes only if this registry ``owns_engine``
        (an edge worker shares its control store's)."""
        self._engine = engine
        self._owns_engine = owns_engine
        try:
            schema.ensure(engine)
            with engine.begin() as conn:
                if conn.execute(sa.select(meta.c.id)).first() is None:
                    conn.execute(sa.insert(meta).values(id=1, generation=0))
        except sa.exc.IntegrityError:
            pass  # another process inserted the meta row first: the same row
        except sa.exc.SQLAlchemyError as e:
            raise ConfigStoreDown(f"configuration store unavailable: {e}") from e

    @classmethod
    def open(cls, control_db: Path) -> Registry:
        return cls(sqlite_engine(control_db), owns_engine=True)

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    # Configurations.
    def apply(self, config: ConfigFile, source: str) -> int:
        """Install ``config`` (already checked) atomically; returns its version."""
        now = int(time.time())
        with self._engine.begin() as conn:
            known = {r.name for r in conn.execute(sa.select(services.c.name))}
            top = conn.execute(sa.select(sa.func.max(services.c.instance_id))).scalar()
            next_id = max(int(top or 0) + 1, FIRST_INSTANCE_ID)
            for spec in config.services:
                if spec.name not in known:
                    conn.execute(
                        sa.insert(services).values(
                            name=spec.name, instance_id=next_id, created_at=now
                        )
                    )
                    next_id += 1
            version = conn.execute(
                sa.insert(configs).values(
                    applied_at=now, source=source, config=config_file.to_json(config)
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            _bump(conn)
        return int(version)

    def active(self) -> Applied | None:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(configs).order_by(configs.c.version.desc()).limit(1)
                ).first()
        except sa.exc.SQLAlchemyError as e:
            raise ConfigStoreDown(f"configuration store unavailable: {e}") from e
        if row is None:
            return None
        return Applied(row.version, row.applied_at, row.source, config_file.from_json(row.config))

    def generation(self) -> int:
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(sa.select(meta.c.generation)).scalar_one())
        except sa.exc.SQLAlchemyError as e:
            raise ConfigStoreDown(f"configuration store unavailable: {e}") from e

    def instance_ids(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return {r.name: r.instance_id for r in conn.execute(sa.select(services))}

    # Tokens.
    def create_token(
        self,
        service: str,
        account_id: int,
        public: bool,
        allow_ips: list[str],
        name: str = "",
    ) -> str:
        """Return a new token (shown once: only its hash is kept)."""
        tokens.networks(allow_ips)  # ValueError before anything is written
        applied = self.active()
        if applied is None or service not in {s.name for s in applied.config.services}:
            raise UnknownService(f"no service {service!r} in the active configuration")
        with self._engine.begin() as conn:
            instance = conn.execute(
                sa.select(services.c.instance_id).where(services.c.name == service)
            ).scalar_one()
            active = conn.execute(
                sa.select(sa.func.count())
                .select_from(token_table)
                .where(token_table.c.service == service, token_table.c.revoked.is_(False))
            ).scalar_one()
            if active >= tokens.MAX_PER_SERVICE:
                raise TokenLimit(
                    f"service {service!r} already has {tokens.MAX_PER_SERVICE} tokens; "
                    "revoke one first"
                )
            token = tokens.new_token(account_id, instance)
            parsed = tokens.parse(token)
            assert parsed is not None
            conn.execute(
                sa.insert(token_table).values(
                    token_hash=parsed.digest,
                    token_id=tokens.token_id(parsed.digest),
                    service=service,
                    account_id=account_id,
                    instance_id=instance,
                    public=public,
                    allow_ips=msgspec.json.encode([c.strip() for c in allow_ips]).decode(),
                    name=name,
                    created_at=int(time.time()),
                    revoked=False,
                )
            )
            _bump(conn)
        return token

    def list_tokens(self) -> list[TokenInfo]:
        return self._rows(token_table, _token)

    def tokens_by_hash(self) -> dict[bytes, TokenInfo]:
        return self._by_hash(token_table, _token)

    def token_by_hash(self, digest: bytes) -> TokenInfo | None:
        return self._one_by_hash(token_table, _token, digest)

    def revoke_token(self, ident: str) -> None:
        """Revoke a personalization or a lookup token by its id."""
        with self._engine.begin() as conn:
            revoked = 0
            for table in (token_table, lookup_token_table):
                revoked += conn.execute(
                    sa.update(table).where(table.c.token_id == ident).values(revoked=True)
                ).rowcount
            if revoked == 0:
                raise NotFound(f"no token with id {ident}")
            _bump(conn)

    # Lookup tokens.
    def create_lookup_token(self, service: str, lookup: str, name: str = "") -> str:
        """Return a new lookup token for ``service``'s lookup ``lookup`` (shown once)."""
        applied = self.active()
        spec = None
        if applied is not None:
            spec = next((s for s in applied.config.services if s.name == service), None)
        if spec is None:
            raise UnknownService(f"no service {service!r} in the active configuration")
        if lookup not in {entry.name for entry in spec.lookups}:
            known = ", ".join(entry.name for entry in spec.lookups) or "none"
            raise UnknownService(f"service {service!r} has no lookup {lookup!r} (lookups: {known})")
        with self._engine.begin() as conn:
            instance = conn.execute(
                sa.select(services.c.instance_id).where(services.c.name == service)
            ).scalar_one()
            active = conn.execute(
                sa.select(sa.func.count())
                .select_from(lookup_token_table)
                .where(
                    lookup_token_table.c.service == service,
                    lookup_token_table.c.revoked.is_(False),
                )
            ).scalar_one()
            if active >= tokens.MAX_PER_SERVICE:
                raise TokenLimit(
                    f"service {service!r} already has {tokens.MAX_PER_SERVICE} lookup tokens; "
                    "revoke one first"
                )
            token = tokens.new_lookup_token()
            digest = tokens.parse_lookup(token)
            assert digest is not None
            conn.execute(
                sa.insert(lookup_token_table).values(
                    token_hash=digest,
                    token_id=tokens.token_id(digest),
                    service=service,
                    lookup=lookup,
                    instance_id=instance,
                    name=name,
                    created_at=int(time.time()),
                    revoked=False,
                )
            )
            _bump(conn)
        return token

    def list_lookup_tokens(self) -> list[LookupTokenInfo]:
        return self._rows(lookup_token_table, _lookup_token)

    def lookup_tokens_by_hash(self) -> dict[bytes, LookupTokenInfo]:
        return self._by_hash(lookup_token_table, _lookup_token)

    def lookup_token_by_hash(self, digest: bytes) -> LookupTokenInfo | None:
        return self._one_by_hash(lookup_token_table, _lookup_token, digest)

    # Both kinds of token, read alike: by service and age, all by hash, or one.
    def _rows(self, table: sa.Table, convert: Callable[[Row], T]) -> list[T]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(table).order_by(table.c.service, table.c.created_at)
            ).all()
        return [convert(r) for r in rows]

    def _by_hash(self, table: sa.Table, convert: Callable[[Row], HashedT]) -> dict[bytes, HashedT]:
        try:
            return {t.token_hash: t for t in self._rows(table, convert)}
        except sa.exc.SQLAlchemyError as e:
            raise ConfigStoreDown(f"configuration store unavailable: {e}") from e

    def _one_by_hash(self, table: sa.Table, convert: Callable[[Row], T], digest: bytes) -> T | None:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(table).where(table.c.token_hash == digest)).first()
        except sa.exc.SQLAlchemyError as e:
            raise ConfigStoreDown(f"configuration store unavailable: {e}") from e
        return None if row is None else convert(row)


def _bump(conn: sa.Connection) -> None:
    conn.execute(sa.update(meta).values(generation=meta.c.generation + 1))


def _token(row: Row) -> TokenInfo:
    r = row._mapping
    return TokenInfo(
        token_id=str(r["token_id"]),
        token_hash=bytes(r["token_hash"]),
        service=str(r["service"]),
        account_id=int(r["account_id"]),
        instance_id=int(r["instance_id"]),
        public=bool(r["public"]),
        allow_ips=_cidrs.decode(str(r["allow_ips"])),
        name=str(r["name"]),
        created_at=int(r["created_at"]),
        revoked=bool(r["revoked"]),
    )


def _lookup_token(row: Row) -> LookupTokenInfo:
    r = row._mapping
    return LookupTokenInfo(
        token_id=str(r["token_id"]),
        token_hash=bytes(r["token_hash"]),
        service=str(r["service"]),
        lookup=str(r["lookup"]),
        instance_id=int(r["instance_id"]),
        name=str(r["name"]),
        created_at=int(r["created_at"]),
        revoked=bool(r["revoked"]),
    )
