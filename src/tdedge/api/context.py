"""What every REST handler gets: the parsed request and the per-worker resources."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.api.callers import Authenticator, Caller
from tdedge.api.wire import ApiError, not_found
from tdedge.config import Settings
from tdedge.control import access
from tdedge.control.bulk_sessions import BulkSessions
from tdedge.control.jobs import JobStore
from tdedge.control.store import ControlStore, databases
from tdedge.edge.http import Headers
from tdedge.edge.services import Services
from tdedge.lake.inventory import LakeCatalog
from tdedge.names import NAME_RULE, is_valid_name, normalize
from tdedge.results.store import ResultStore


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
    results: ResultStore

    def owned_database(
        self, caller: Caller, name: str, action: access.Action = access.Action.READ
    ) -> str:
        """``name`` normalised, once the access rule (control/access.py) lets the caller
        do ``action`` to it; else the REST API's answer to the refusal.

        Another account's database is reported as missing, not forbidden: its name is
        not the caller's to learn. A write that creates its database creates it here.
        """
        database = valid_name(name, "database")
        owner = self.auth.owner(database)
        if owner != caller.account_id:
            # The cache may miss a database created a moment ago by another worker.
            owner = self.control.database_owner(database)
        decision = access.decide(
            caller.key,
            action,
            database,
            owner,
            auto_create=self.settings.auto_create_database_for_master,
        )
        if isinstance(decision, access.Refused):
            raise refusal(decision, database)
        if decision.creates:
            self.auth.created(database, caller.account_id)
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


def refusal(refused: access.Refused, database: str) -> ApiError:
    """How the REST API says an access refusal (TD's conventions; the key itself was
    checked already, with 401)."""
    if refused.reason == access.MASTER_KEY_NEEDED:
        return ApiError(403, "forbidden", refused.message)
    if refused.reason == access.RESERVED_DATABASE:
        return ApiError(400, "reserved_database", refused.message)
    if refused.reason in access.KEY_REFUSALS:
        return ApiError(401, "unauthorized", "the API key is not valid")
    return not_found(f"database '{database}'")


def valid_name(name: str, what: str) -> str:
    if not is_valid_name(name):
        raise ApiError(400, "invalid_name", f"invalid {what} name {name!r}: {NAME_RULE}")
    return normalize(name)


def path_args(segments: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(unquote(s) for s in segments)
