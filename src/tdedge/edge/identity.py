"""The browser identities the edge hands out: the global id and the server-side cookie id.

Cookie names, formats and lifetimes are in cookies.py. This module reads them from a
request and builds the answers; it is shared by the records door (td-js-sdk's
``GET /`` and ``/get_cookie_id``), the legacy door (``ssc.<domain>`` hosts land there,
since only ``*.records.in.*`` hosts pick the records door) and the pixel.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from tdedge.edge.cookies import (
    GLOBAL_ID_COOKIE,
    SSC_COOKIE,
    cookie_value,
    global_id_cookie,
    new_id,
    ssc_cookie,
    ssc_domain,
)
from tdedge.edge.http import JSON, HTTPError, Response, Scope, encode_json

NO_STORE = ("cache-control", "no-store")


class Identity:
    def __init__(self, cookie_domain: str | None) -> None:
        self._cookie_domain = cookie_domain

    def global_id(self, scope: Scope) -> tuple[str, tuple[str, str]]:
        """The browser's global id (minted when it has none) and the cookie that keeps it.

        The cookie is sent on every use, so its 400 days count from the last visit.
        """
        value = cookie_value(scope.headers.items(), GLOBAL_ID_COOKIE) or new_id()
        return value, global_id_cookie(value, self._cookie_domain)

    def global_id_answer(self, scope: Scope) -> Response:
        """td-js-sdk's ``GET /``: ``{"global_id": …}``, never cached (it is per browser)."""
        value, cookie = self.global_id(scope)
        return 200, [("content-type", JSON), NO_STORE, cookie], encode_json({"global_id": value})

    def server_cookie_answer(self, scope: Scope) -> Response:
        """``GET /get_cookie_id?cookie_domain=D``: ``{"td_ssc_id": …}`` and ``_td_ssc_id`` on D."""
        if scope.method not in ("GET", "HEAD"):
            raise HTTPError(405, "method_not_allowed", "use GET", headers=[("allow", "GET")])
        params = dict(parse_qsl(scope.query_string, keep_blank_values=True))
        host = str(scope.headers.get("host") or scope.authority or "")
        domain = ssc_domain(params.get("cookie_domain"), host)
        value = cookie_value(scope.headers.items(), SSC_COOKIE) or new_id()
        return (
            200,
            [("content-type", JSON), NO_STORE, ssc_cookie(value, domain)],
            encode_json({"td_ssc_id": value}),
        )
