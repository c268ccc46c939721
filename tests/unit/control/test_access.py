"""The access rule, case by case (control/access.py): every surface asks it."""

from __future__ import annotations

import pytest

from tdedge.control.access import Action, Allowed, Refused, decide
from tdedge.control.keys import KeyInfo

MINE, THEIRS = 1, 2
MASTER = KeyInfo("k1", MINE, "master", revoked=False, created_at=0)
WRITE = KeyInfo("k2", MINE, "write", revoked=False, created_at=0)
REVOKED = KeyInfo("k3", MINE, "master", revoked=True, created_at=0)
MISSING = None

ALLOWED = "allowed"
CREATES = "creates"

CASES = [
    # key, action, database, owner, auto_create, answer
    (None, Action.WRITE, "db", MINE, True, "unknown_key"),
    (None, Action.READ, "db", MINE, True, "unknown_key"),
    (REVOKED, Action.WRITE, "db", MINE, True, "revoked_key"),
    (REVOKED, Action.READ, "db", MINE, True, "revoked_key"),
    (MASTER, Action.WRITE, "tdedge_system", MINE, True, "reserved_database"),
    (MASTER, Action.CREATE, "information_schema", MISSING, True, "reserved_database"),
    (WRITE, Action.WRITE, "main", MISSING, True, "reserved_database"),
    (WRITE, Action.READ, "db", MINE, True, "master_key_needed"),
    (WRITE, Action.MANAGE, "db", MINE, True, "master_key_needed"),
    (WRITE, Action.CREATE, "db", MISSING, True, "master_key_needed"),
    (MASTER, Action.WRITE, "db", THEIRS, True, "foreign_key"),
    (WRITE, Action.WRITE, "db", THEIRS, True, "foreign_key"),
    (MASTER, Action.READ, "db", THEIRS, True, "foreign_key"),
    (MASTER, Action.MANAGE, "db", THEIRS, True, "foreign_key"),
    (MASTER, Action.CREATE, "db", THEIRS, True, "foreign_key"),
    (MASTER, Action.WRITE, "db", MISSING, True, CREATES),
    (MASTER, Action.WRITE, "db", MISSING, False, "database_not_found"),
    (WRITE, Action.WRITE, "db", MISSING, True, "database_not_found"),
    (MASTER, Action.CREATE, "db", MISSING, False, CREATES),
    (MASTER, Action.READ, "db", MISSING, True, "database_not_found"),
    (MASTER, Action.MANAGE, "db", MISSING, True, "database_not_found"),
    (MASTER, Action.WRITE, "db", MINE, True, ALLOWED),
    (WRITE, Action.WRITE, "db", MINE, False, ALLOWED),
    (MASTER, Action.READ, "db", MINE, True, ALLOWED),
    (MASTER, Action.MANAGE, "db", MINE, True, ALLOWED),
    (MASTER, Action.CREATE, "db", MINE, True, ALLOWED),  # exists: the caller says 409
]


@pytest.mark.parametrize(("key", "action", "database", "owner", "auto_create", "answer"), CASES)
def test_the_rule(
    key: KeyInfo | None,
    action: Action,
    database: str,
    owner: int | None,
    auto_create: bool,
    answer: str,
) -> None:
    decision = decide(key, action, database, owner, auto_create=auto_create)
    if answer in (ALLOWED, CREATES):
        assert decision == Allowed(MINE, creates=answer == CREATES)
    else:
        assert isinstance(decision, Refused)
        assert decision.reason == answer
        assert decision.account_id == (None if key is None else key.account_id)
        assert decision.message
