"""CORS for every route a browser calls cross-origin, on every door.

td-js-sdk sends every call with ``fetch(…, {credentials: 'include'})``: the global id
and the records (records door), the server-side cookie (``ssc.<domain>``: legacy or
records door), ``fetchPersonalization`` (p13n door, ``/public/…``) and
``fetchUserSegments`` (CDP door). A browser hands a credentialed answer to the page
only when it carries ``Access-Control-Allow-Credentials: true`` and an
``Access-Control-Allow-Origin`` that echoes the request's ``Origin`` exactly (``*`` is
refused with credentials); the same holds for the preflight that every call with a
header beyond the "simple" ones (``Authorization``, ``WP13n-Token``, a JSON
``Content-Type``…) is sent after. ``Vary: Origin`` goes on every answer: it differs by
origin, and a shared cache must not hand one origin's answer to another.

Which origins: ``--cors-origin`` (repeatable) lists them, for every door; without it any
origin is allowed, as Treasure Data's own endpoints do for any site that embeds the
SDK. A door may narrow it further per request (a p13n service's ``allowed_origins``).
A preflight from another origin is answered 403, so the browser never sends the
request; an actual answer to such an origin carries no ``Access-Control-Allow-*``
header, so the page cannot read it.

Each door says which methods and request headers its browser routes take (``Policy``);
everything else is the same for all of them, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdedge.edge.http import JSON_HEADERS, Response, error_body

# Chromium caps a cached preflight at 2 hours.
MAX_AGE_S = 7200
VARY = ("vary", "Origin")


@dataclass(frozen=True, slots=True)
class Policy:
    """What one door's browser routes take: methods and request headers (preflight)."""

    methods: str
    headers: str


# td-js-sdk's records and global id: TD1 auth, the vnd.treasuredata types, Accept and
# User-Agent; X-TD-Write-Key for pages posting with a write key header.
RECORDS = Policy(
    "GET, POST, OPTIONS", "Authorization, Content-Type, Accept, User-Agent, X-TD-Write-Key"
)
# fetchPersonalization: a POST with TD1 auth, the p13n token and the vnd type.
P13N = Policy("POST, OPTIONS", "Authorization, Content-Type, Accept, User-Agent, WP13n-Token")
# fetchUserSegments: a GET that still sends Content-Type: application/json.
CDP = Policy("GET, OPTIONS", "Content-Type, Accept, User-Agent")


class Cors:
    def __init__(self, origins: tuple[str, ...] | None, policy: Policy = RECORDS) -> None:
        # None, or a "*" entry: any origin.
        self._origins = None if origins is None or "*" in origins else frozenset(origins)
        self._policy = policy

    def allowed(self, origin: str) -> bool:
        return self._origins is None or origin in self._origins

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers for an actual (non-preflight) answer to a request from ``origin``."""
        if origin is None or not self.allowed(origin):
            return [VARY]
        return [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            VARY,
        ]

    def preflight(self, origin: str | None) -> Response:
        """The answer to ``OPTIONS``: 204 with the permissions, or 403 for a foreign origin."""
        if origin is None or not self.allowed(origin):
            body = error_body("origin_not_allowed", f"origin {origin} is not allowed")
            return 403, [*JSON_HEADERS, VARY], body
        return (
            204,
            [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-methods", self._policy.methods),
                ("access-control-allow-headers", self._policy.headers),
                ("access-control-max-age", str(MAX_AGE_S)),
                VARY,
            ],
            b"",
        )
