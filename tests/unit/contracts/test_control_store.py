"""What every control store must do: accounts, keys and databases.

The control store is SQLAlchemy's: one implementation, on each database the fixture
names (SQLite, the embedded default; PostgreSQL, a real server the tests start), opened
by ``tdedge.backends`` from the settings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import pytest

from tdedge import backends
from tdedge.config import Settings
from tdedge.control.keys import hash_key
from tdedge.control.store import ControlStore
from tdedge.errors import AlreadyExists, InvalidName, LimitReached, NotFound


@pytest.fixture
def store(settings: Settings) -> Iterator[ControlStore]:
    s = backends.control(settings)
    yield s
    s.close()


def test_a_key_is_kept_only_as_its_hash_and_found_by_it(store: ControlStore) -> None:
    key = store.create_key(7, "write")
    digest = hash_key(key)
    with store.engine.connect() as conn:
        dumped = repr([tuple(r) for r in conn.exec_driver_sql("SELECT * FROM api_keys")])
    assert key not in dumped
    found = store.key_by_hash(digest)
    assert found is not None and (found.account_id, found.type) == (7, "write")
    assert not found.revoked
    assert store.keys_by_hash()[digest] == found
    assert store.key_by_hash(hash_key("7/" + "0" * 40)) is None


def test_a_revoked_key_stays_known_as_revoked(store: ControlStore) -> None:
    key = store.create_key(7, "master")
    info = store.key_by_hash(hash_key(key))
    assert info is not None
    store.revoke_key(info.key_id)
    again = store.key_by_hash(hash_key(key))
    assert again is not None and again.revoked
    with pytest.raises(NotFound):
        store.revoke_key("no-such-key")


def test_a_database_belongs_to_one_account_once(store: ControlStore) -> None:
    store.create_database("web", 1)
    assert store.database_owner("web") == 1
    with pytest.raises(AlreadyExists):
        store.create_database("web", 2)
    assert store.database_owners() == {"web": 1}
    assert store.database_owner("elsewhere") is None


@pytest.mark.parametrize("name", ["__ducklake_metadata_lake", "system", "Bad Name", ""])
def test_reserved_and_invalid_database_names_are_refused(store: ControlStore, name: str) -> None:
    with pytest.raises(InvalidName):
        store.create_database(name, 1)
    assert store.list_databases() == []


def test_the_database_limit_holds_against_concurrent_creations(settings: Settings) -> None:
    limited = msgspec.structs.replace(settings, max_databases_per_account=3)
    stores = [backends.control(limited) for _ in range(4)]
    outcomes: list[str] = []
    start = threading.Barrier(len(stores) * 3)

    def create(store: ControlStore, name: str) -> None:
        start.wait()
        try:
            store.create_database(name, 1)
            outcomes.append("created")
        except LimitReached:
            outcomes.append("limit")

    threads = [
        threading.Thread(target=create, args=(s, f"db_{i}_{j}"))
        for i, s in enumerate(stores)
        for j in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert outcomes.count("created") == 3 and outcomes.count("limit") == 9
    after = backends.control(settings)
    assert len(after.list_databases()) == 3
    after.close()


def test_account_ids_given_and_drawn_never_collide(store: ControlStore) -> None:
    store.ensure_account(1)
    store.ensure_account(5)
    drawn = {store.create_account() for _ in range(3)}
    assert drawn.isdisjoint({1, 5}) and len(drawn) == 3
    assert store.account_count() == 5
