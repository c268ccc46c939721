"""Credential extraction and the optional synchronous key check.

The legacy door takes a key from ``X-TD-Write-Key`` or the URL (``legacy_key``); the
records door and the SDK routes from ``Authorization: TD1`` or ``X-TD-Write-Key``
only (``records_key``, ``key_refusal``).

Treasure Data validates write keys after answering 200; so does tdedge by default
(``--auth async``): the loader sends records with a bad key to import errors. With
``--auth sync`` the edge checks the key against an in-memory cache and answers 403 at
once — still recording the refused record for operators.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from tdedge.config import Settings
from tdedge.control import access
from tdedge.control.directory import Directory
from tdedge.edge.http import Headers, HTTPError, Scope
from tdedge.names import normalize


def legacy_key(headers: Headers, query_string: str) -> str | None:
    """``X-TD-Write-Key`` header, else the URL-encoded ``td_write_key`` parameter."""
    key = headers.get("x-td-write-key")
    if key:
        return str(key).strip()
    if "td_write_key" in query_string:
        for name, value in parse_qsl(query_string, keep_blank_values=True):
            if name == "td_write_key" and value:
                return value.strip()
    return None


# What a records route tells a client whose key is missing or in the URL.
HEADER_KEY_HINT = "send the key in an Authorization: TD1 <key> or X-TD-Write-Key header"


def records_key(headers: Headers) -> str | None:
    """``Authorization: TD1 <key>`` (scheme in any case), else ``X-TD-Write-Key``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = str(auth).strip().partition(" ")
        if scheme.lower() == "td1" and value.strip():
            return value.strip()
    key = headers.get("x-td-write-key")
    if key and str(key).strip():
        return str(key).strip()
    return None


def url_key(query_string: str) -> str | None:
    """The ``td_write_key`` URL parameter, if present (even empty: it is refused anyway)."""
    if "td_write_key" not in query_string:
        return None
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == "td_write_key":
            return value
    return None


def key_refusal(scope: Scope, key: str | None) -> HTTPError | None:
    """Why a records request may not use its credentials, or None."""
    if url_key(scope.query_string) is not None:
        return HTTPError(
            403,
            "key_in_url",
            f"the td_write_key URL parameter is not accepted here: {HEADER_KEY_HINT}",
        )
    if key is None:
        return HTTPError(403, "missing_key", f"no API key: {HEADER_KEY_HINT}")
    return None


class SyncAuth:
    """Answers whether a key may write to a database, from the worker's Directory."""

    def __init__(self, settings: Settings, directory: Directory) -> None:
        self._directory = directory
        self._auto_create = settings.auto_create_database_for_master

    def refusal(self, key_hash: bytes, database: str) -> str | None:
        """None when the key may write; otherwise the reason code the loader would give
        (control/access.py). A write that creates its database is left to the loader,
        which also checks the account's database limit."""
        now = time.monotonic()
        verdicts = self._directory.verdicts(now)
        ident = (key_hash, database)
        if ident in verdicts:
            return verdicts[ident]
        info = self._directory.key(key_hash, now)
        name = normalize(database)
        owner = None if info is None else self._directory.database_owner(name, now)
        decision = access.decide(
            info, access.Action.WRITE, name, owner, auto_create=self._auto_create
        )
        reason = decision.reason if isinstance(decision, access.Refused) else None
        if info is not None and owner is not None:
            verdicts[ident] = reason
        return reason
