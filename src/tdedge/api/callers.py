"""Who is calling: ``Authorization: TD1 <apikey>`` resolved to an account and a key type.

Master keys read and manage their account's databases, tables and jobs; write keys
only import (PUT /v3/table/import…). Unknown or revoked keys get 401, as TD answers;
a write key asking for anything else gets 403.
"""

from __future__ import annotations

import time

import msgspec

from tdedge.api.wire import ApiError
from tdedge.control import access
from tdedge.control.directory import Directory
from tdedge.control.keys import KeyInfo, KeyType, hash_key
from tdedge.edge.http import Headers


class Caller(msgspec.Struct, frozen=True):
    key_hash: bytes
    key_id: str
    account_id: int
    type: KeyType

    @property
    def master(self) -> bool:
        return self.type == "master"

    @property
    def key(self) -> KeyInfo:
        """The key as the access rule reads it (a caller's key is never revoked)."""
        return KeyInfo(self.key_id, self.account_id, self.type, revoked=False, created_at=0)


def td1_key(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, key = str(value).strip().partition(" ")
    if scheme.upper() != "TD1" or not key.strip():
        return None
    return key.strip()


class Authenticator:
    """Resolves keys through the worker's Directory (safe to call from several threads)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def caller(self, headers: Headers) -> Caller:
        key = td1_key(headers)
        if key is None:
            raise ApiError(401, "unauthorized", "send the API key as 'Authorization: TD1 <apikey>'")
        digest = hash_key(key)
        info = self._directory.key(digest, time.monotonic())
        if info is None or info.revoked:
            raise ApiError(401, "unauthorized", "the API key is not valid")
        return Caller(digest, info.key_id, info.account_id, info.type)

    def owner(self, database: str) -> int | None:
        return self._directory.database_owner(database, time.monotonic())

    def created(self, database: str, account_id: int) -> int:
        return self._directory.create_database(database, account_id)


def require_master(caller: Caller) -> None:
    """The 403 of the access rule (control/access.py) for a write key on a route that
    reads or manages, before the route's database is known."""
    if not caller.master:
        raise ApiError(403, "forbidden", access.MASTER_KEY_MESSAGE)
