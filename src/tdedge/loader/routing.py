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
``database_limit``
    a master key would create the database by writing to it, but its account has
    ``max_databases_per_account`` databases already
``foreign_key``
    the key's account is not the account that owns the database
``invalid_record``
    the body is not one JSON object (the edge validates bodies; defence in depth)
``record_too_large``
    a bulk-import record over ``import_max_record_bytes`` of JSON (the edge keeps its
    first 64 KiB); the rest of its upload loads
``duplicate_upload``
    one row per bulk upload dropped because its account had loaded that table's
    ``unique_id`` already (loader/imports.py); ``record`` is empty, ``detail`` says
    how many records were not loaded again
``load_failed``
    the lake refused this table's rows again and again while other tables of the
    batch could be written (loader/runner.py): the records are set aside so that one
    table cannot stop the loader; ``detail`` holds the lake's error
any other code
    the edge rejected the record already (``Envelope.reject``), kept verbatim

After the edge's own verdict: ``invalid_name`` for a key that is valid, then the
access rule every surface shares (control/access.py) for the key codes, the
database codes and ``foreign_key``, then ``database_limit`` when a write would create
the database. The verdict for one (key, database, table) is computed once per batch;
rows keep journal order.

The loader (loader/runner.py) refuses accepted records too, with these codes:

``table_limit``
    the table does not exist and its account has ``max_tables_per_account`` tables
``too_many_columns``
    the record would take its table past ``max_table_columns`` (loader/limits.py)
``load_failed``
    the loader could not shape the table's rows, or the lake refused to commit them
    (alone, twice) while it committed the rest of the batch: the records are set aside
    so that one table cannot stop the loader; ``detail`` holds the error
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any

import msgspec

from tdedge.config import Settings
from tdedge.control import access
from tdedge.control.directory import Directory
from tdedge.control.keys import key_id
from tdedge.errors import LimitReached
from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.lake.batch import Rejection
from tdedge.names import is_valid_name, normalize

UNKNOWN_KEY = access.UNKNOWN_KEY
REVOKED_KEY = access.REVOKED_KEY
INVALID_NAME = "invalid_name"
RESERVED_DATABASE = access.RESERVED_DATABASE
DATABASE_NOT_FOUND = access.DATABASE_NOT_FOUND
FOREIGN_KEY = access.FOREIGN_KEY
INVALID_RECORD = "invalid_record"
LOAD_FAILED = "load_failed"
TABLE_LIMIT = "table_limit"
# Records whose key may not write where they go: anybody could have sent them.
UNAUTHORIZED = frozenset({UNKNOWN_KEY, REVOKED_KEY, FOREIGN_KEY})

# The doors whose records carry tdedge's id (Envelope.record_id): the SDK routes,
# edge/ingest.py and edge/mobile.py. Other doors' tables get no _tdedge_id column.
ID_DOORS = frozenset({"ingest", "mobile"})
# The door whose entries carried tdedge's id in the record, and the key it had there,
# before the id moved to Envelope.record_id (``record_ids``).
OLD_ID_DOOR = "ingest"
OLD_ID_KEY = "td_uuid"
_record_id = attrgetter("record_id")
_door = attrgetter("door")

_decode_record = msgspec.json.Decoder(dict[str, Any]).decode
_decode_records = msgspec.json.Decoder(list[dict[str, Any]]).decode

TableKey = tuple[str, str]  # (database, table), normalised


@dataclass(frozen=True, slots=True)
class Accept:
    database: str
    table: str
    account_id: int  # the database's owner


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    detail: str
    account_id: int | None


Verdict = Accept | Reject


@dataclass(frozen=True, slots=True)
class Envelopes:
    """A batch's envelopes in journal order, found by index, and the group of each.

    The loader works on indexes into one flat list rather than on an object per
    envelope: the place of an envelope (shard, seq) is only needed for the few that
    become import errors.
    """

    items: list[Envelope]
    groups: Sequence[JournalGroup]
    starts: list[int]  # index in ``items`` of each group's first envelope

    @classmethod
    def of(cls, groups: Sequence[JournalGroup]) -> Envelopes:
        items: list[Envelope] = []
        starts: list[int] = []
        for group in groups:
            starts.append(len(items))
            items.extend(group.envelopes)
        return cls(items, groups, starts)

    def group(self, index: int) -> JournalGroup:
        """The group that holds ``items[index]``."""
        return self.groups[bisect_right(self.starts, index) - 1]

    def place(self, index: int) -> tuple[str, int, int]:
        """Where ``items[index]`` is in the journal: shard, seq, index in its group."""
        g = bisect_right(self.starts, index) - 1
        group = self.groups[g]
        return group.shard, group.seq, index - self.starts[g]


@dataclass(slots=True)
class TableInput:
    """The decoded records bound for one table, with their arrival times and indexes."""

    account_id: int  # the database's owner
    records: list[dict[str, Any]] = field(default_factory=list)
    received_s: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # indexes into Envelopes.items
    # tdedge's id of each record (Envelope.record_id, "" for none); None when no record
    # of the table has one, as for every door but the SDKs'.
    ids: list[str] | None = None

    def without(self, dropped: Iterable[int]) -> TableInput:
        """The same input without the records at positions ``dropped``."""
        gone = set(dropped)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        ids = self.ids
        return TableInput(
            self.account_id,
            [self.records[i] for i in keep],
            [self.received_s[i] for i in keep],
            [self.rows[i] for i in keep],
            None if ids is None else [ids[i] for i in keep],
        )


@dataclass(slots=True)
class Routed:
    envelopes: Envelopes
    tables: dict[TableKey, TableInput] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    # What an import error keeps of a record whose key may not write to its database:
    # the edge answered 200 before checking it (as Treasure Data does), so anybody can
    # send such records, and the import errors must not grow with their size.
    unauthorized_keep_bytes: int | None = None

    def rejected(self, rows: Iterable[int], verdict: Reject, now: float) -> list[Rejection]:
        """The import errors of ``rows`` (indexes into ``envelopes.items``)."""
        items, group = self.envelopes.items, self.envelopes.group
        keep = self.unauthorized_keep_bytes if verdict.reason in UNAUTHORIZED else None
        return [rejection(items[i], group(i), verdict, now, keep) for i in rows]


class Router:
    def __init__(self, settings: Settings, directory: Directory) -> None:
        self._settings = settings
        self._directory = directory

    def route(self, groups: Sequence[JournalGroup], now: float) -> Routed:
        routed = Routed(
            Envelopes.of(groups), unauthorized_keep_bytes=self._settings.refused_key_keep_bytes
        )
        items = routed.envelopes.items
        accepted: dict[TableKey, list[list[int]]] = {}
        owners: dict[TableKey, int] = {}
        sdk: set[TableKey] = set()  # tables some SDK door's records go to
        for rows in _alike(items):
            first = items[rows[0]]
            verdict = self.verdict(first, now)
            if isinstance(verdict, Reject):
                routed.rejections.extend(routed.rejected(rows, verdict, now))
            else:
                table = (verdict.database, verdict.table)
                accepted.setdefault(table, []).append(rows)
                owners[table] = verdict.account_id
                if first.door in ID_DOORS:
                    sdk.add(table)
        for table, found in accepted.items():
            # Several keys wrote to this table: restore journal order, on which the type
            # rule ("first value seen") depends.
            rows = found[0] if len(found) == 1 else sorted(chain.from_iterable(found))
            routed.tables[table] = self._decode(routed, rows, owners[table], now, table in sdk)
        return routed

    def _decode(
        self, routed: Routed, rows: list[int], owner: int, now: float, sdk: bool
    ) -> TableInput:
        items = routed.envelopes.items
        bound = [items[i] for i in rows]
        try:
            # One decode of them all as a JSON array: 40 % cheaper than one call per
            # record (bench/loader_live.py --record ingest).
            records = _decode_records(b"[%b]" % b",".join([env.record for env in bound]))
        except msgspec.DecodeError:
            # The edge validates bodies, so this is rare: sort them out one by one.
            return self._accept_each(routed, rows, owner, now, sdk)
        if len(records) != len(bound):
            # A record holding more than one value ("{…},{…}") shifted the array: only
            # a record decoded alone can tell which. No record can hold fewer than one
            # value without breaking the array's syntax.
            return self._accept_each(routed, rows, owner, now, sdk)
        received_s = [env.received_ms // 1000 for env in bound]
        ids = record_ids(bound, records) if sdk else None
        return TableInput(owner, records, received_s, rows, ids)

    def _accept_each(
        self, routed: Routed, rows: list[int], owner: int, now: float, sdk: bool
    ) -> TableInput:
        target = TableInput(owner)
        items = routed.envelopes.items
        bound: list[Envelope] = []
        for i in rows:
            env = items[i]
            try:
                record = _decode_record(env.record)
            except msgspec.DecodeError as e:
                bad = Reject(INVALID_RECORD, f"not one JSON object: {e}", None)
                routed.rejections.extend(routed.rejected([i], bad, now))
                continue
            target.records.append(record)
            target.received_s.append(env.received_ms // 1000)
            target.rows.append(i)
            bound.append(env)
        target.ids = record_ids(bound, target.records) if sdk else None
        return target

    def verdict(self, env: Envelope, now: float) -> Verdict:
        """Whether records like ``env`` load, and where (see the module docstring)."""
        key = self._directory.key(env.key_hash, now)
        account = None if key is None else key.account_id
        if env.reject:
            return Reject(env.reject, env.reject_detail or "rejected at the edge", account)
        if (
            key is not None
            and not key.revoked
            and not (is_valid_name(env.database) and is_valid_name(env.table))
        ):
            return Reject(INVALID_NAME, "database and table names allow only [A-Za-z0-9_]", account)
        database, table = normalize(env.database), normalize(env.table)
        owner = None if key is None else self._directory.database_owner(database, now)
        decision = access.decide(
            key,
            access.Action.WRITE,
            database,
            owner,
            auto_create=self._settings.auto_create_database_for_master,
        )
        if isinstance(decision, access.Refused):
            return Reject(decision.reason, decision.message, decision.account_id)
        if decision.creates:
            try:
                self._directory.create_database(database, decision.account_id)
            except LimitReached as e:
                return Reject(e.code, str(e), account)
        return Accept(database, table, decision.account_id)


def record_ids(bound: Sequence[Envelope], records: list[dict[str, Any]]) -> list[str] | None:
    """tdedge's id of each record (``TableInput.ids``), None when none has one.

    Entries the ingest door journaled before the id moved to ``Envelope.record_id``
    carry it in the record, as ``td_uuid`` (that door refused a client's own td_uuid
    then): it is taken out of the record, so that a table's _tdedge_id holds it and
    td_uuid stays the client's (lake/upgrades.py renames the old column to match).
    """
    ids = list(map(_record_id, bound))
    # Both checks run in C: the usual batch has no ids at all, or no old entries.
    if "" in ids and OLD_ID_DOOR in map(_door, bound):
        for i, env in enumerate(bound):
            if env.door == OLD_ID_DOOR and not env.record_id:
                old = records[i].pop(OLD_ID_KEY, None)
                ids[i] = old if isinstance(old, str) else ""
    return ids if any(ids) else None


def _alike(envelopes: list[Envelope]) -> Iterable[list[int]]:
    """Indexes of envelopes sharing key, database, table, edge verdict (and its detail)
    and door, in order.

    Those share a verdict, so grouping first keeps the per-envelope work to one dict
    lookup: this is the hot path. The door tells the tables whose records may carry
    tdedge's ids (``ID_DOORS``) without a pass over the others.
    """
    groups: dict[tuple[bytes, str, str, str, str, str], list[int]] = {}
    for i, env in enumerate(envelopes):
        ident = (env.key_hash, env.database, env.table, env.reject, env.door, env.reject_detail)
        group = groups.get(ident)
        if group is None:
            groups[ident] = [i]
        else:
            group.append(i)
    return groups.values()


def rejection(
    env: Envelope, place: JournalGroup, verdict: Reject, now: float, keep: int | None = None
) -> Rejection:
    """The import error of ``env``; with ``keep``, its record cut to that many bytes."""
    record, detail = env.record, verdict.detail
    if keep is not None and len(record) > keep:
        detail = f"{detail} (record cut to its first {keep} of {len(record)} bytes)"
        record = record[:keep]
    return Rejection(
        time=int(now),
        received_ms=env.received_ms,
        reason=verdict.reason,
        detail=detail,
        door=env.door,
        database_name=env.database,
        table_name=env.table,
        key_id=key_id(env.key_hash),
        account_id=verdict.account_id,
        record=record.decode("utf-8", "replace"),
        journal_shard=place.shard,
        journal_seq=place.seq,
    )
