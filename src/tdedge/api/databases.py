"""``/v3/database/…``: list, create, delete (td-client ``DatabaseAPI``)."""

from __future__ import annotations

from tdedge import drops
from tdedge.api.context import Api, Request, refusal, valid_name
from tdedge.api.wire import ApiError, ok, td_date
from tdedge.control import access
from tdedge.edge.http import Response
from tdedge.errors import AlreadyExists, InvalidName, LimitReached


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
    owner = api.control.database_owner(name)
    decision = access.decide(
        req.caller.key,
        access.Action.CREATE,
        name,
        owner,
        auto_create=api.settings.auto_create_database_for_master,
    )
    if isinstance(decision, access.Refused) and decision.reason == access.RESERVED_DATABASE:
        raise ApiError(400, "invalid_name", f"database name {name!r} is reserved")
    if owner is not None:
        # Names are one namespace for all accounts: taken is taken, whoever took it.
        raise ApiError(409, "already_exists", f"database '{name}' already exists")
    if isinstance(decision, access.Refused):
        raise refusal(decision, name)
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
    name = api.owned_database(req.caller, req.args[0], access.Action.MANAGE)
    drops.drop_database(api.catalog, api.engine, name)
    return ok({"database": name})
