"""What TD's REST API looks like on the wire: dates, error bodies, JSON answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tdedge.edge.http import JSON_HEADERS, HTTPError, Response, encode_json


class ApiError(HTTPError):
    """A refusal as TD answers it: ``{"error", "message", "severity"}``.

    td-client maps the status: 401 AuthError, 403 ForbiddenError, 404 NotFoundError,
    409 AlreadyExistsError; anything else is an APIError.
    """


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist")


def error_response(e: HTTPError) -> Response:
    body = encode_json({"error": e.code, "message": e.message, "severity": "error"})
    return e.status, [*JSON_HEADERS, *e.headers], body


def ok(obj: Any) -> Response:
    return 200, JSON_HEADERS, encode_json(obj)


def td_date(ts: float | None) -> str | None:
    """``2014-10-04 01:13:11 UTC``, as TD prints created_at and friends."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_date(ts: float | None) -> str | None:
    """``2014-10-04T01:13:20Z``, as TD prints a table's counter_updated_at."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
