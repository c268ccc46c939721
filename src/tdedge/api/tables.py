"""``/v3/table/…``: list, show, create (log tables), delete (td-client ``TableAPI``)."""

from __future__ import annotations

from typing import Any

import msgspec

from tdedge import drops
from tdedge.api.context import Api, Request, valid_name
from tdedge.api.wire import ApiError, iso_date, not_found, ok, td_date
from tdedge.control import access
from tdedge.edge.http import Response
from tdedge.errors import LakeError
from tdedge.lake.inventory import TableInfo
from tdedge.loader.routing import TABLE_LIMIT


def table_json(info: TableInfo) -> dict[str, Any]:
    """A table as TD lists it; ``schema`` is a JSON *string* without the time column."""
    updated = info.updated_at or info.created_at
    return {
        "id": info.id,
        "name": info.name,
        "estimated_storage_size": info.size,
        "counter_updated_at": iso_date(updated),
        "last_log_timestamp": iso_date(info.last_log_time),
        "delete_protected": False,
        "created_at": td_date(info.created_at),
        "updated_at": td_date(updated),
        "type": "log",
        "include_v": True,
        "count": info.count,
        "schema": msgspec.json.encode([list(c) for c in info.columns]).decode(),
        "expire_days": None,
    }


def list_tables(api: Api, req: Request) -> Response:
    database = api.owned_database(req.caller, req.args[0])
    tables = [table_json(t) for t in api.catalog.tables(database)]
    return ok({"database": database, "tables": tables})


def show_table(api: Api, req: Request) -> Response:
    database = api.owned_database(req.caller, req.args[0])
    name = valid_name(req.args[1], "table")
    info = api.catalog.table(database, name)
    if info is None:
        raise not_found(f"table '{database}.{name}'")
    return ok(table_json(info))


def create_table(api: Api, req: Request) -> Response:
    database = api.owned_database(req.caller, req.args[0], access.Action.MANAGE)
    name = valid_name(req.args[1], "table")
    kind = req.args[2]
    if kind != "log":
        raise ApiError(400, "unsupported_table_type", f"only log tables exist here, not {kind!r}")
    if api.catalog.table(database, name) is not None:
        raise ApiError(409, "already_exists", f"table '{database}.{name}' already exists")
    limit = api.settings.max_tables_per_account
    owned = [db for db, _ in api.account_databases(req.caller)]
    if api.catalog.table_count(owned) >= limit:
        raise ApiError(
            403,
            TABLE_LIMIT,
            f"the account has {limit} tables, as many as it may have (max_tables_per_account)",
        )
    try:
        api.catalog.create_table(database, name)
    except LakeError as e:
        if "already exists" in str(e):
            raise ApiError(
                409, "already_exists", f"table '{database}.{name}' already exists"
            ) from e
        raise
    return ok({"database": database, "table": name, "type": "log"})


def delete_table(api: Api, req: Request) -> Response:
    database = api.owned_database(req.caller, req.args[0], access.Action.MANAGE)
    name = valid_name(req.args[1], "table")
    if api.catalog.table(database, name) is None:
        raise not_found(f"table '{database}.{name}'")
    drops.drop_table(api.catalog, api.engine, database, name)
    return ok({"database": database, "table": name, "type": "log"})
