"""The edge's key check remembers its verdicts between reloads of the directory, and
never remembers one that a key or database created a moment ago would change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdedge.config import Settings
from tdedge.control.directory import NEGATIVE_TTL_S, Directory
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.edge.auth import SyncAuth


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    s = ControlStore.open(tmp_path / "control.sqlite")
    yield s
    s.close()


def _auth(store: ControlStore, ttl_s: float) -> tuple[SyncAuth, Directory]:
    directory = Directory(store, ttl_s=ttl_s)
    return SyncAuth(Settings(), directory), directory


def test_a_database_created_after_a_refusal_is_writable_once_the_miss_expires(
    store: ControlStore,
) -> None:
    auth, _ = _auth(store, ttl_s=60.0)
    account = store.create_account()
    key = hash_key(store.create_key(account, "write"))
    assert auth.refusal(key, "later") == "database_not_found"
    store.create_database("later", account)  # through another process, say
    time.sleep(NEGATIVE_TTL_S + 0.1)
    assert auth.refusal(key, "later") is None


def test_a_remembered_verdict_ends_with_the_reload(store: ControlStore) -> None:
    auth, _ = _auth(store, ttl_s=0.2)
    account = store.create_account()
    store.create_database("db", account)
    key = store.create_key(account, "write")
    assert auth.refusal(hash_key(key), "db") is None
    assert auth.refusal(hash_key(key), "db") is None  # remembered
    store.revoke_key(_key_id(store))
    time.sleep(0.25)
    assert auth.refusal(hash_key(key), "db") == "revoked_key"


def test_a_missing_database_is_decided_again_once_created(store: ControlStore) -> None:
    auth, directory = _auth(store, ttl_s=60.0)
    account = store.create_account()
    other = store.create_account()
    key = store.create_key(account, "write")
    assert auth.refusal(hash_key(key), "theirs") == "database_not_found"
    directory.create_database("theirs", other)
    assert auth.refusal(hash_key(key), "theirs") == "foreign_key"


def _key_id(store: ControlStore) -> str:
    (info,) = store.list_keys()
    return info.key_id
