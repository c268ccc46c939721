"""Where the pixel's ``td_redirect`` may send a browser, and the URL it gets.

tdedge must not be an open redirector (a trusted host bouncing users to any site), so
targets are limited to ``--redirect-host`` entries: ``example.com`` allows exactly that
host, ``*.example.com`` its subdomains (not itself). With none configured every
redirect is refused with 400.

The URL goes into a ``Location`` header as given, so it must be one header line and
mean to the browser what it means here: printable ASCII only (no CR/LF, no spaces),
no backslash (browsers read ``\\`` as ``/``, so ``https://evil\\@good/`` would go to
``evil`` while a URL parser sees host ``good``), an ``http``/``https`` scheme and a host.

``td_global_id`` as a query parameter value (``?uid=td_global_id``) is replaced with the
real global id; nothing else in the URL is touched.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tdedge.edge.http import HTTPError

PLACEHOLDER = "td_global_id"
# Printable ASCII except space, backslash and the characters URLs never hold raw.
_SAFE_URL = re.compile(r"[!#-;=?-\[\]-~]+")


class RedirectPolicy:
    def __init__(self, hosts: tuple[str, ...]) -> None:
        exact: set[str] = set()
        suffixes: list[str] = []
        for entry in hosts:
            entry = entry.strip().lower().rstrip(".")
            if entry.startswith("*."):
                suffixes.append(entry[1:])  # ".example.com"
            elif entry:
                exact.add(entry)
        self._exact = frozenset(exact)
        self._suffixes = tuple(suffixes)

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self._exact or any(host.endswith(s) for s in self._suffixes)

    def check(self, url: str) -> None:
        """400 unless ``url`` is a well-formed redirect to an allowed host."""
        if not _SAFE_URL.fullmatch(url):
            raise HTTPError(
                400,
                "invalid_redirect",
                "td_redirect must be an absolute, URL-encoded http(s) URL "
                "(no spaces, control characters or backslashes)",
            )
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            host = None
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
            raise HTTPError(400, "invalid_redirect", "td_redirect must be an http(s) URL")
        if not self.allows(host):
            raise HTTPError(
                400,
                "redirect_not_allowed",
                f"redirects to {host} are not allowed (--redirect-host)",
            )


def needs_global_id(url: str) -> bool:
    return PLACEHOLDER in url


def substitute(url: str, global_id: str) -> str:
    """``url`` with each query parameter whose value is ``td_global_id`` set to the id."""
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    params = []
    for param in query.split("&"):
        name, eq, value = param.partition("=")
        params.append(f"{name}={global_id}" if eq and value == PLACEHOLDER else param)
    return f"{base}?{'&'.join(params)}{hash_sep}{fragment}"
