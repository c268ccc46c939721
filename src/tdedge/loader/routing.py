"""Which journal entries load into which table, and which become import errors, and why.

Treasure Data checks write keys asynchronously: the edge accepts a record with any
well-formed key and the loader decides. A rejected record is never dropped silently:
it becomes a row of ``tdedge_system.import_errors`` with one of these reason codes
(stable; also the ``reason`` label of ``tdedge_rejections_total``):

``unknown_key``
    the key's hash matches no key (never issued, or mistyped)
``revoked_key``
    the key was revoked
``invalid_name``
    the database or table name breaks the naming rule (the edge checks names first;
    this is defence in depth)
``reserved_database``
    the database is ``tdedge_system``, which tdedge keeps for itself
``database_not_found``
    the database does not exist and the key may not create it: only master keys
    create a database by writing to it, and only with
    ``auto_create_database_for_master``
``foreign_key``
    the key's account is not the account that owns the database
``invalid_record``
    the body is not one JSON object (the edge validates bodies; defence in depth)
``load_failed``
    the lake refused this table's rows again and again while other tables of the
    batch could be written (loader/runner.py): the records are set aside so that one
    table cannot stop the loader; ``detail`` holds the lake's error
any other code
    the edge rejected the record already (``Envelope.reject``), kept verbatim

Checks run in that order, after the edge's own verdict. The verdict for one
(key, database, table) is computed once per batch; rows keep journal order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.keys import KeyInfo, key_id
from tdedge.journal.envelope import Envelope, JournalEntry
from tdedge.lake.batch import Rejection
from tdedge.names import SYSTEM_DATABASE, is_reserved, is_valid_name, normalize

UNKNOWN_KEY = "unknown_key"
REVOKED_KEY = "revoked_key"
INVALID_NAME = "invalid_name"
RESERVED_DATABASE = "reserved_database"
DATABASE_NOT_FOUND = "database_not_found"
FOREIGN_KEY = "foreign_key"
INVALID_RECORD = "invalid_record"
LOAD_FAILED = "load_failed"

_decode_record = msgspec.json.Decoder(dict[str, Any]).decode

TableKey = tuple[str, str]  # (database, table), normalised


@dataclass(frozen=True, slots=True)
class Accept:
    database: str
    table: str


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    detail: str
    account_id: int | None


Verdict = Accept | Reject


@dataclass(slots=True)
class TableInput:
    """The decoded records bound for one table, with their arrival times and entries."""

    records: list[dict[str, Any]] = field(default_factory=list)
    received_s: list[int] = field(default_factory=list)
    entries: list[JournalEntry] = field(default_factory=list)


@dataclass(slots=True)
class Routed:
    tables: dict[TableKey, TableInput] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)


class Router:
    def __init__(self, settings: Settings, directory: Directory) -> None:
        self._settings = settings
        self._directory = directory

    def route(self, entries: Sequence[JournalEntry], now: float) -> Routed:
        routed = Routed()
        accepted: dict[TableKey, list[list[JournalEntry]]] = {}
        for group in _groups(entries):
            verdict = self.verdict(group[0].envelope, now)
            if isinstance(verdict, Reject):
                routed.rejections.extend(rejection(e, verdict, now) for e in group)
            else:
                accepted.setdefault((verdict.database, verdict.table), []).append(group)
        order: dict[int, int] | None = None
        for table, groups in accepted.items():
            if len(groups) == 1:
                bound = groups[0]
            else:
                # Several keys wrote to this table: restore journal order, on which the
                # type rule ("first value seen") depends.
                order = order or {id(e): i for i, e in enumerate(entries)}
                bound = sorted((e for g in groups for e in g), key=lambda e: order[id(e)])
            routed.tables[table] = self._decode(routed, bound, now)
        return routed

    def _decode(self, routed: Routed, bound: list[JournalEntry], now: float) -> TableInput:
        try:
            records = [_decode_record(e.envelope.record) for e in bound]
        except msgspec.DecodeError:
            # The edge validates bodies, so this is rare: sort them out one by one.
            target = TableInput()
            self._accept_each(routed, target, bound, now)
            return target
        return TableInput(records, [e.envelope.received_ms // 1000 for e in bound], bound)

    def _accept_each(
        self, routed: Routed, target: TableInput, group: list[JournalEntry], now: float
    ) -> None:
        for entry in group:
            try:
                record = _decode_record(entry.envelope.record)
            except msgspec.DecodeError as e:
                bad = Reject(INVALID_RECORD, f"not one JSON object: {e}", None)
                routed.rejections.append(rejection(entry, bad, now))
                continue
            target.records.append(record)
            target.received_s.append(entry.envelope.received_ms // 1000)
            target.entries.append(entry)

    def verdict(self, env: Envelope, now: float) -> Verdict:
        """Whether records like ``env`` load, and where (see the module docstring)."""
        key = self._directory.key(env.key_hash, now)
        account = None if key is None else key.account_id
        if env.reject:
            return Reject(env.reject, "rejected at the edge", account)
        if key is None:
            return Reject(UNKNOWN_KEY, "no such API key", None)
        if key.revoked:
            return Reject(REVOKED_KEY, f"key {key.key_id} is revoked", account)
        if not (is_valid_name(env.database) and is_valid_name(env.table)):
            return Reject(INVALID_NAME, "database and table names allow only [A-Za-z0-9_]", account)
        database, table = normalize(env.database), normalize(env.table)
        if is_reserved(database):
            return Reject(RESERVED_DATABASE, f"{SYSTEM_DATABASE} is reserved", account)
        owner = self._owner(database, key, now)
        if owner is None:
            return Reject(DATABASE_NOT_FOUND, f"database {database} does not exist", account)
        if owner != key.account_id:
            detail = f"database {database} belongs to another account than key {key.key_id}"
            return Reject(FOREIGN_KEY, detail, account)
        return Accept(database, table)

    def _owner(self, database: str, key: KeyInfo, now: float) -> int | None:
        owner = self._directory.database_owner(database, now)
        if (
            owner is None
            and key.type == "master"
            and self._settings.auto_create_database_for_master
        ):
            owner = self._directory.create_database(database, key.account_id)
        return owner


def _groups(entries: Sequence[JournalEntry]) -> Iterable[list[JournalEntry]]:
    """Entries sharing key, database, table and edge verdict, which share a verdict.

    Grouping first keeps the per-entry work to one dict lookup: this is the hot path.
    """
    groups: dict[tuple[bytes, str, str, str], list[JournalEntry]] = {}
    for entry in entries:
        env = entry.envelope
        ident = (env.key_hash, env.database, env.table, env.reject)
        group = groups.get(ident)
        if group is None:
            groups[ident] = [entry]
        else:
            group.append(entry)
    return groups.values()


def rejection(entry: JournalEntry, verdict: Reject, now: float) -> Rejection:
    env = entry.envelope
    return Rejection(
        time=int(now),
        received_ms=env.received_ms,
        reason=verdict.reason,
        detail=verdict.detail,
        door=env.door,
        database_name=env.database,
        table_name=env.table,
        key_id=key_id(env.key_hash),
        account_id=verdict.account_id,
        record=env.record.decode("utf-8", "replace"),
        journal_shard=entry.shard,
        journal_seq=entry.seq,
    )
