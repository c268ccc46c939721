"""CORS for the browser-facing routes (td-js-sdk calls the records door cross-origin).

td-js-sdk sends ``fetch(…, {credentials: 'include'})`` with ``Authorization``,
``Content-Type``, ``Accept`` and ``User-Agent``, so every call is preflighted and a
credentialed answer must echo the exact ``Origin`` (``*`` is not allowed with
credentials) and say ``Access-Control-Allow-Credentials: true``.

Which origins: ``--cors-origin`` (repeatable) lists them; without it any origin is
allowed, as Treasure Data's own endpoints do for any site that embeds the SDK. A
preflight from another origin is answered 403, so the browser never sends the request;
an actual answer to such an origin carries no ``Access-Control-Allow-*`` header, so the
page cannot read it. (Every records route that writes needs a header a "simple"
cross-origin request cannot carry — ``Authorization``, ``X-TD-Write-Key`` or the
``vnd.treasuredata`` type — so a browser always preflights it first.)
"""

from __future__ import annotations

from tdedge.edge.http import JSON_HEADERS, Response, error_body

ALLOW_HEADERS = "Authorization, Content-Type, Accept, User-Agent, X-TD-Write-Key"
ALLOW_METHODS = "GET, POST, OPTIONS"
# Chromium caps a cached preflight at 2 hours.
MAX_AGE_S = 7200


class Cors:
    def __init__(self, origins: tuple[str, ...] | None) -> None:
        # None, or a "*" entry: any origin.
        self._origins = None if origins is None or "*" in origins else frozenset(origins)

    def allowed(self, origin: str) -> bool:
        return self._origins is None or origin in self._origins

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers for an actual (non-preflight) answer to a request from ``origin``.

        ``Vary: Origin`` always: the answer differs by origin, and a shared cache must
        not hand one origin's answer to another.
        """
        if origin is None or not self.allowed(origin):
            return [("vary", "Origin")]
        return [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        ]

    def preflight(self, origin: str | None) -> Response:
        """The answer to ``OPTIONS``: 204 with the permissions, or 403 for a foreign origin."""
        if origin is None or not self.allowed(origin):
            body = error_body("origin_not_allowed", f"origin {origin} is not allowed")
            return 403, [*JSON_HEADERS, ("vary", "Origin")], body
        return (
            204,
            [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-methods", ALLOW_METHODS),
                ("access-control-allow-headers", ALLOW_HEADERS),
                ("access-control-max-age", str(MAX_AGE_S)),
                ("vary", "Origin"),
            ],
            b"",
        )
