"""May this key do this to this database? The one rule every door, the loader and the
REST API ask.

Four actions: ``write`` (records into tables, whatever the door: Postback, pixel,
ingest, table and bulk imports, p13n events; tables are made as records arrive),
``read`` (query jobs, listing and showing databases and tables), ``manage`` (creating
and deleting a database's tables, deleting the database) and ``create`` (a database,
through the REST API). The rule, first match wins:

=========  ===========================  ==========================  =====================
key        action                       database                    answer
=========  ===========================  ==========================  =====================
none       any                          any                         ``unknown_key``
revoked    any                          any                         ``revoked_key``
any        any                          reserved (``tdedge_*``...)  ``reserved_database``
write      read, manage, create         any                         ``master_key_needed``
any        any                          another account's           ``foreign_key``
master     write                        missing                     allowed: created [#]_
master     create                       missing                     allowed: created
any        write, read, manage          missing                     ``database_not_found``
any        any                          the key's account's         allowed
=========  ===========================  ==========================  =====================

.. [#] Only with ``Settings.auto_create_database_for_master`` (td-js-sdk documents that
   writing creates the database); without it, ``database_not_found``. The creator
   checks the account's database limit.

Reason codes are stable: they are the import errors' ``reason`` and the refusals'
metric label. How a surface says them over HTTP is its own convention (TD's APIs
differ): the write doors answer 403 with the code (401 on the p13n door for a missing
or unknown key); the REST API answers 401 for an unknown or revoked key, 403 for a
write key, and 404 for another account's database, whose existence is not the caller's
to learn.

One case used to have two answers: with ``--auth sync`` a write key writing to a
database that does not exist got 200 at the Postback doors (and an import error later)
but 403 at the p13n door. The edge checks what it can: 403 ``database_not_found`` on
every door.

Pure: the caller looks the key and the database's owner up (control/directory.py) and
names the database normalised and valid (names.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tdedge.control.keys import KeyInfo
from tdedge.names import is_reserved

UNKNOWN_KEY = "unknown_key"
REVOKED_KEY = "revoked_key"
RESERVED_DATABASE = "reserved_database"
MASTER_KEY_NEEDED = "master_key_needed"
FOREIGN_KEY = "foreign_key"
DATABASE_NOT_FOUND = "database_not_found"
MASTER_KEY_MESSAGE = "this API key may only write records; reading and managing need a master key"
# The key itself was refused: anybody can send those, in bulk.
KEY_REFUSALS = frozenset({UNKNOWN_KEY, REVOKED_KEY})


class Action(StrEnum):
    WRITE = "write"
    READ = "read"
    MANAGE = "manage"
    CREATE = "create"


@dataclass(frozen=True, slots=True)
class Allowed:
    account_id: int  # the key's account, which owns (or will own) the database
    creates: bool  # the database is missing and this action creates it


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    message: str
    account_id: int | None  # the key's account, when the key is known


Decision = Allowed | Refused


def decide(
    key: KeyInfo | None,
    action: Action,
    database: str,
    owner: int | None,
    *,
    auto_create: bool,
) -> Decision:
    """Whether ``key`` may do ``action`` to ``database``, owned by account ``owner``
    (None: no such database)."""
    if key is None:
        return Refused(UNKNOWN_KEY, "no such API key", None)
    account = key.account_id
    if key.revoked:
        return Refused(REVOKED_KEY, f"key {key.key_id} is revoked", account)
    if is_reserved(database):
        return Refused(RESERVED_DATABASE, f"{database} is a name tdedge keeps for itself", account)
    master = key.type == "master"
    if action is not Action.WRITE and not master:
        return Refused(MASTER_KEY_NEEDED, MASTER_KEY_MESSAGE, account)
    if owner is not None:
        if owner != account:
            return Refused(
                FOREIGN_KEY,
                f"database {database} belongs to another account than key {key.key_id}",
                account,
            )
        return Allowed(account, creates=False)
    if master and (action is Action.CREATE or (action is Action.WRITE and auto_create)):
        return Allowed(account, creates=True)
    return Refused(DATABASE_NOT_FOUND, f"database {database} does not exist", account)
