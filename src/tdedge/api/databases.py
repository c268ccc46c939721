"""``/v3/database/…``: list, create, delete (td-client ``DatabaseAPI``)."""

from __future__ import annotations

from tdedge.api.context import Api, Request, valid_name
from tdedge.api.wire import ApiError, ok, td_date
from tdedge.edge.http import Response
from tdedge.errors import AlreadyExists, InvalidName, LimitReached
from tdedge.names import is_reserved


def list_databases(api: Api, req: Request) -> Response:
    entries = []
    for name, created in api.account_databases(req.caller):
        tables = api.catalog.tables(name)
        updated = max([created, *(t.updated_at or 0 for t in tables)])
        entries.append(
            {
                "name": name,
                "count": sum(t.count for t in tables),
                "created_at": td_date(created),
                "updated_at": td_date(updated),
                "organization": None,
                "permission": "administrator",
                "delete_protected": False,
            }
        )
    return ok({"databases": entries})


def create_database(api: Api, req: Request) -> Response:
    name = valid_name(req.args[0], "database")
    if is_reserved(name):
        raise ApiError(400, "invalid_name", f"database name {name!r} is reserved")
    try:
        api.control.create_database(name, req.caller.account_id)
    except AlreadyExists:
        raise ApiError(409, "already_exists", f"database '{name}' already exists") from None
    except InvalidName as e:
        raise ApiError(400, "invalid_name", str(e)) from None
    except LimitReached as e:
        raise ApiError(403, e.code, str(e)) from None
    return ok({"database": name})


def delete_database(api: Api, req: Request) -> Response:
    name = api.owned_database(req.caller, req.args[0])
    api.catalog.drop_database(name)
    api.forget_database(name)
    return ok({"database": name})
