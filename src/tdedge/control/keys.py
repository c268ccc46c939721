"""API keys: generation, hashing and constant-time comparison.

Keys look like Treasure Data's, ``{account_id}/{40 hex}``. Only SHA-256 of the whole
key is stored: keys are 160 random bits, so a slow password hash would add latency to
every check without adding safety. The key id shown by ``keys list`` is derived from
the hash, never from the secret.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

import msgspec

from tdedge import numerals

KeyType = Literal["write", "master"]


class KeyInfo(msgspec.Struct, frozen=True):
    key_id: str
    account_id: int
    type: KeyType
    revoked: bool
    created_at: int  # unix seconds


def new_key(account_id: int) -> str:
    return f"{account_id}/{secrets.token_hex(20)}"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def key_id(key_hash: bytes) -> str:
    return key_hash.hex()[:12]


def claimed_account(key: str) -> int | None:
    """The account a key claims by its prefix; None when it has no valid prefix."""
    head, sep, _ = key.partition("/")
    return numerals.bigint(head) if sep else None
