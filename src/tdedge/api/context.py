"""What every REST handler gets: the parsed request and the per-worker resources."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.api.callers import Authenticator, Caller
from tdedge.api.catalog import LakeCatalog
from tdedge.api.wire import ApiError, not_found
from tdedge.config import Settings
from tdedge.control.bulk_sessions import BulkSessions
from tdedge.control.jobs import JobStore
from tdedge.control.store import ControlStore, databases
from tdedge.edge.http import Headers
from tdedge.edge.services import Services
from tdedge.names import NAME_RULE, is_valid_name, normalize


@dataclass(slots=True)
class Request:
    method: str
    args: tuple[str, ...]  # the path's variable segments, URL-decoded
    params: dict[str, str]  # query string, then form fields
    headers: Headers
    body: bytes
    caller: Caller
    host: str


@dataclass(slots=True)
class Api:
    settings: Settings
    engine: Engine
    control: ControlStore
    jobs: JobStore
    catalog: LakeCatalog
    auth: Authenticator
    services: Services
    sessions: BulkSessions

    def owned_database(self, caller: Caller, name: str) -> str:
        """``name`` normalised, when it is a database of the caller's account; else 404.

        Another account's database is reported as missing, not forbidden: its name is
        not the caller's to learn.
        """
        database = valid_name(name, "database")
        # The cache may miss a database created a moment ago by another worker.
        if (
            self.auth.owner(database) != caller.account_id
            and self.control.database_owner(database) != caller.account_id
        ):
            raise not_found(f"database '{database}'")
        return database

    def account_databases(self, caller: Caller) -> list[tuple[str, int]]:
        """(name, created_at) of the caller's databases."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(databases.c.name, databases.c.created_at)
                .where(databases.c.account_id == caller.account_id)
                .order_by(databases.c.name)
            ).all()
        return [(str(r.name), int(r.created_at)) for r in rows]

    def forget_database(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(databases).where(databases.c.name == name))


def valid_name(name: str, what: str) -> str:
    if not is_valid_name(name):
        raise ApiError(400, "invalid_name", f"invalid {what} name {name!r}: {NAME_RULE}")
    return normalize(name)


def path_args(segments: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(unquote(s) for s in segments)
