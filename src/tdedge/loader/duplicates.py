"""SDK events resent with the same record_uuid load once.

A mobile SDK resends the events of a request it got no answer for, and the server may
well have stored them: the connection dropped after the 200, say. With
``enableAutoAppendRecordUUID()`` each copy carries the event's own ``record_uuid``,
which the SDK doors put in the journal entry (``Envelope.record_uuid``). The loader
keeps the first entry of each (account, database, table, record_uuid) it meets within
``Settings.record_uuid_window_s`` and drops the others — copies in the same batch, or
ids an earlier batch loaded (loader/record_ids.py says how a restart keeps this true).

An id counts as loaded once its event is shaped for its table, whether it then lands
in the table or, refused one by one (``too_many_columns``, ``load_failed``), in the
import errors. Events refused before (their key, their database, their table past
``max_tables_per_account``) are not: a resend loads once the cause is gone.

Dropping is never silent: the dropped events are counted
(``tdedge_record_duplicates_total``), logged, and leave one import-error row per table
and batch (reason ``duplicate_record``) whose record lists their ids.

Tables no SDK door writes to cost nothing here (the router knows them); SDK events
without the option, one pass over their entries in C.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import msgspec

from tdedge.lake.batch import Rejection
from tdedge.loader.record_ids import Place, RecordIds, record_key
from tdedge.loader.routing import Reject, Routed, rejection

log = logging.getLogger("tdedge.loader")

DUPLICATE_RECORD = "duplicate_record"
# The ids one import-error row lists at most; its detail says how many there were.
MAX_LISTED_IDS = 100

_record_uuid = attrgetter("record_uuid")
_encode = msgspec.json.Encoder().encode


TableKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Sifted:
    # Each table's new ids, with their entries: claimed for the tables that are shaped.
    claims: dict[TableKey, dict[bytes, Place]] = field(default_factory=dict)
    dropped: int = 0  # entries dropped as duplicates
    rejections: list[Rejection] = field(default_factory=list)  # one per table with some

    def claims_of(self, tables: Iterable[TableKey]) -> dict[bytes, Place]:
        """The new ids of ``tables``."""
        found: dict[bytes, Place] = {}
        for table in tables:
            found.update(self.claims.get(table, {}))
        return found


@dataclass(frozen=True, slots=True)
class Candidate:
    row: int  # position in its table's input
    key: bytes
    place: Place
    record_uuid: str


def sift(routed: Routed, ledger: RecordIds, now: float) -> Sifted:
    """Drop the duplicates from ``routed.tables`` (see the module docstring); returns
    the ids to claim before the batch is committed, and what was dropped.

    Two copies in one batch are told apart here, so the claims need not be recorded
    before the caller knows which tables will be committed."""
    items = routed.envelopes.items
    place = routed.envelopes.place
    found: dict[TableKey, list[Candidate]] = {}
    for (database, table), target in routed.tables.items():
        if target.ids is None:
            continue  # no SDK door's records: no record_uuid either
        uuids = list(map(_record_uuid, map(items.__getitem__, target.rows)))
        if not any(uuids):
            continue
        account = target.account_id
        for n, uuid in enumerate(uuids):
            if uuid:
                key = record_key(account, database, table, uuid)
                i = target.rows[n]
                found.setdefault((database, table), []).append(Candidate(n, key, place(i), uuid))
    if not found:
        return Sifted()
    loaded = ledger.owners({c.key for cs in found.values() for c in cs})
    owners: dict[bytes, Place] = {}  # the entry each id of this batch loads from
    claims: dict[TableKey, dict[bytes, Place]] = {}
    dropped = 0
    rejections: list[Rejection] = []
    for where, candidates in found.items():
        earlier: list[Candidate] = []  # loaded by an earlier batch
        here: list[Candidate] = []  # a copy of one earlier in this batch
        for c in candidates:
            if c.key in owners:
                here.append(c)
            elif c.key in loaded and loaded[c.key] != c.place:
                earlier.append(c)
            else:
                owners[c.key] = c.place
                if c.key not in loaded:
                    claims.setdefault(where, {})[c.key] = c.place
        if earlier or here:
            target = routed.tables[where]
            routed.tables[where] = target.without(c.row for c in (*earlier, *here))
            dropped += len(earlier) + len(here)
            rejections.append(_dropped(routed, where, target.rows, earlier, here, now))
    return Sifted(claims, dropped, rejections)


def _dropped(
    routed: Routed,
    table: TableKey,
    rows: Sequence[int],
    earlier: list[Candidate],
    here: list[Candidate],
    now: float,
) -> Rejection:
    """The import-error row of one table's duplicates in one batch."""
    database, name = table
    every = sorted((*earlier, *here), key=lambda c: c.row)
    first = rows[every[0].row]
    account = routed.tables[table].account_id
    n = len(every)
    log.info(
        "dropped %d resent events of %s.%s (account %d): their record_uuid was loaded "
        "already (%d by an earlier batch, %d earlier in this batch)",
        n,
        database,
        name,
        account,
        len(earlier),
        len(here),
    )
    detail = (
        f"{n} events whose record_uuid was loaded already for this account and table "
        f"({len(earlier)} by an earlier batch, {len(here)} earlier in this batch) were "
        "not loaded again"
    )
    listed = [c.record_uuid for c in every[:MAX_LISTED_IDS]]
    record = _encode({"record_uuids": listed, "duplicates": n}).decode()
    env = routed.envelopes.items[first]
    found = rejection(
        env, routed.envelopes.group(first), Reject(DUPLICATE_RECORD, detail, account), now
    )
    return msgspec.structs.replace(found, record=record)
