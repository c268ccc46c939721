"""The identifiers tdedge keeps in browsers' cookies: the global id and the ``_td_ssc_id``.

Global id
  td-js-sdk asks the records door for it (``GET /``) and the tracking pixel substitutes
  it for ``td_global_id=td_global_id``. The server keeps it in its own cookie,
  ``_tdedge_global_id``, on its own host (or ``--cookie-domain``), ``SameSite=None;
  Secure`` so it also travels on cross-site requests (pixels, SDK calls from other
  sites), ``HttpOnly`` because no script needs to read it (the SDK caches the id in its
  own first-party ``_td_global`` cookie; a different name keeps the two apart when the
  SDK's cookie domain covers tdedge's host).

Server-side cookie
  ``GET /get_cookie_id?cookie_domain=D`` answers ``{"td_ssc_id": …}`` and sets the
  first-party ``_td_ssc_id`` cookie on ``D``, which td-js-sdk reads (so not HttpOnly).

Both are random UUIDs (version 4). A cookie value that is not one is ignored and
replaced: a value never reaches a record unless tdedge minted its form. Both cookies
live 400 days (the longest expiry Chromium keeps) and are renewed whenever used.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from tdedge.edge.http import HTTPError

GLOBAL_ID_COOKIE = "_tdedge_global_id"
SSC_COOKIE = "_td_ssc_id"
MAX_AGE_S = 400 * 24 * 3600

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A DNS name, lower case, no trailing dot: the only thing allowed into a Domain attribute.
_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


def new_id() -> str:
    return str(uuid.uuid4())


def cookie_value(header_items: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first well-formed (UUID) value of cookie ``name`` in the request headers.

    Takes every ``Cookie`` header: HTTP/2 clients split cookies over several.
    """
    for header, value in header_items:
        if header != "cookie" or name not in value:
            continue
        for pair in value.split(";"):
            key, sep, val = pair.strip().partition("=")
            if sep and key == name:
                val = val.strip().strip('"').lower()
                if _UUID.fullmatch(val):
                    return val
    return None


def global_id_cookie(value: str, domain: str | None) -> tuple[str, str]:
    """The ``Set-Cookie`` header that keeps (or renews) the global id."""
    scope = f"; Domain={domain}" if domain else ""
    return (
        "set-cookie",
        f"{GLOBAL_ID_COOKIE}={value}; Max-Age={MAX_AGE_S}; Path=/{scope}; "
        "Secure; HttpOnly; SameSite=None",
    )


def ssc_cookie(value: str, domain: str) -> tuple[str, str]:
    """The first-party ``_td_ssc_id`` cookie: readable by td-js-sdk, on ``domain``."""
    return (
        "set-cookie",
        f"{SSC_COOKIE}={value}; Max-Age={MAX_AGE_S}; Path=/; Domain={domain}; Secure; SameSite=Lax",
    )


def valid_cookie_domain(raw: str | None) -> str | None:
    """The normalised domain, or None when it is not a plain DNS name."""
    if not raw:
        return None
    domain = raw.strip().lower().removeprefix(".")
    return domain if _DOMAIN.fullmatch(domain) else None


def ssc_domain(raw: str | None, host: str) -> str:
    """The ``cookie_domain`` a ``get_cookie_id`` request may set a cookie on; else 400.

    A browser stores a cookie only for a domain that the request's host is inside of:
    anything else is refused here rather than answered with a cookie that would vanish.
    The check is also what keeps the parameter from writing arbitrary header text.
    """
    domain = valid_cookie_domain(raw)
    if domain is None:
        raise HTTPError(
            400, "invalid_cookie_domain", "cookie_domain must be a DNS name such as example.com"
        )
    hostname = host_name(host)
    if hostname != domain and not hostname.endswith("." + domain):
        raise HTTPError(
            400,
            "invalid_cookie_domain",
            f"cookie_domain {domain} does not contain this server's host {hostname}",
        )
    return domain


def host_name(host: str) -> str:
    """``Host`` header without its port, lower case (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host
