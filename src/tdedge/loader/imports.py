"""Bulk imports load once per account and unique_id: what makes ``import_with_id``
exactly-once.

fluent-plugin-td uploads a chunk again, with the same unique_id, after a timeout. The
edge answers a retry the loader has recorded at once (control/imports.py); any other
is journaled, so one chunk can be journaled twice (a retry before the first copy was
loaded, two uploads racing on two workers). The loader decides: every envelope of an
upload carries the unique_id, its place in the chunk and the upload's token
(``Envelope.import_id``, ``import_index``, ``import_attempt``), and of each
(account, database, table, unique_id) the loader keeps the first upload it meets and
drops the others:

- an upload whose key is in ``tdedge_system.bulk_imports`` was loaded by an earlier
  batch, unless it carries the token recorded there: then it is a later part of that
  same upload (a large upload spans several journal groups, loaded batch by batch);
- of several uploads of one key in a batch, the first in the batch's order is kept.
  Two uploads in one journal group (journals written before tokens) are told apart by
  their places, each upload's starting at 0.

The account is the upload's key's, as the loader checks it: two accounts' uploads never
collide, even on a database that changed hands. An upload the loader refuses whole
(its key unknown or revoked, its database gone or another account's) is not recorded:
its records become import errors with that reason, and a retry with a good key loads.
Records refused one by one (``record_too_large``, say) do not stop the upload counting
as loaded: they are in the import errors, once.

Kept uploads go into ``bulk_imports`` in the batch's own transaction, with their rows
and positions (lake/lake.py): a crash leaves both or neither; then into the edge's
ledger (``remember``). Dropping is not an error, but it is never silent: the positions
move past the dropped envelopes, which are counted
(``tdedge_import_duplicates_total``), logged, and leave one import-error row per
dropped upload (reason ``duplicate_upload``) naming the id and how many records were
not loaded again, so an operator can see why a 200'd upload added nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import msgspec

from tdedge.control.imports import Imported, ImportLedger
from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.lake.batch import BulkImport, ImportKey, Rejection
from tdedge.lake.lake import Lake
from tdedge.loader.routing import Accept, Reject, Router, rejection
from tdedge.names import normalize

log = logging.getLogger("tdedge.loader")

DUPLICATE_UPLOAD = "duplicate_upload"

_import_id = attrgetter("import_id")

Name = tuple[str, str, str]  # (database, table, unique_id) as the envelopes carry them


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload's envelopes in one group: ``groups[group].envelopes[start:stop]``."""

    name: Name
    attempt: str
    group: int
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class Sifted:
    groups: Sequence[JournalGroup]  # the batch without the dropped envelopes
    imports: list[BulkImport]  # the uploads (or parts) kept
    dropped: int = 0  # envelopes dropped
    rejections: list[Rejection] = field(default_factory=list)  # one per dropped upload


def uploads(groups: Sequence[JournalGroup]) -> list[Upload]:
    """The uploads with a unique_id in ``groups``, in order."""
    found: list[Upload] = []
    for g, group in enumerate(groups):
        envs = group.envelopes
        # The hot path: most groups carry no import id, and this checks them in C.
        if not any(map(_import_id, envs)):
            continue
        here: tuple[Name, str] | None = None
        start = 0
        for i, env in enumerate(envs):
            this = (_name(env), env.import_attempt) if env.import_id else None
            if this != here or (this is not None and env.import_index == 0):
                if here is not None:
                    found.append(Upload(here[0], here[1], g, start, i))
                here, start = this, i
        if here is not None:
            found.append(Upload(here[0], here[1], g, start, len(envs)))
    return found


def sift_batch(groups: Sequence[JournalGroup], router: Router, lake: Lake, now: float) -> Sifted:
    """The batch without bulk imports loaded already (see the module docstring)."""
    found = uploads(groups)
    if not found:
        return Sifted(groups, [])
    accounts = [_account(router, groups[up.group].envelopes[up.start], now) for up in found]
    keys = {(a, *up.name) for up, a in zip(found, accounts, strict=True) if a is not None}
    return sift(groups, found, accounts, lake.loaded_imports(keys), now)


def sift(
    groups: Sequence[JournalGroup],
    found: Sequence[Upload],
    accounts: Sequence[int | None],
    loaded: Mapping[ImportKey, str | None],
    now: float,
) -> Sifted:
    """Keep the first upload of each key not ``loaded`` yet, and the later parts of the
    uploads kept; drop the others. ``accounts`` holds each upload's account, None for
    one refused whole (kept, and not recorded: the router turns it into import errors).
    """
    # The token of the upload each key loads from; None for one from before tokens.
    owner: dict[ImportKey, str | None] = dict(loaded)
    imports: list[BulkImport] = []
    rejections: list[Rejection] = []
    dropped: dict[int, list[Upload]] = {}
    for up, account in zip(found, accounts, strict=True):
        if account is None:
            continue
        key = (account, *up.name)
        group = groups[up.group]
        if key in owner and not (up.attempt and owner[key] == up.attempt):
            dropped.setdefault(up.group, []).append(up)
            where = "by an earlier batch" if key in loaded else "earlier in this batch"
            rejections.append(_dropped(group, up, account, where, now))
            continue
        owner[key] = up.attempt
        database, table, unique_id = up.name
        imports.append(
            BulkImport(
                account_id=account,
                database_name=database,
                table_name=table,
                unique_id=unique_id,
                attempt=up.attempt,
                records=up.stop - up.start,
                journal_shard=group.shard,
                journal_seq=group.seq,
                time=int(now),
            )
        )
    if not dropped:
        return Sifted(groups, imports)
    out: list[JournalGroup] = []
    n = 0
    for g, group in enumerate(groups):
        drop = dropped.get(g)
        if drop is None:
            out.append(group)
            continue
        envs, at = group.envelopes, 0
        keep: list[Envelope] = []
        for up in drop:
            keep.extend(envs[at : up.start])
            at = up.stop
            n += up.stop - up.start
        keep.extend(envs[at:])
        if keep:
            out.append(JournalGroup(group.shard, group.seq, keep))
    return Sifted(out, imports, n, rejections)


def remember(ledger: ImportLedger, imports: Sequence[BulkImport], now: float) -> None:
    """Tell the edge's ledger which uploads are loaded, after the lake has them: a retry
    is then answered at once. Failing here loses nothing (the lake still drops the
    retry), so it is logged, not raised."""
    loaded = [
        (i.account_id, i.database_name, i.table_name, i.unique_id, Imported("", i.records))
        for i in imports
    ]
    try:
        ledger.record_many(loaded, now)
    except Exception:
        log.exception("could not record %d loaded bulk imports in the ledger", len(loaded))


def _account(router: Router, env: Envelope, now: float) -> int | None:
    """The account an upload loads for, or None when the loader refuses it whole.

    A reason the edge gave one record (``Envelope.reject``) is that record's alone.
    """
    verdict = router.verdict(msgspec.structs.replace(env, reject=""), now)
    if isinstance(verdict, Accept):
        return verdict.account_id
    return None


def _name(env: Envelope) -> Name:
    return (normalize(env.database), normalize(env.table), env.import_id)


def _dropped(group: JournalGroup, up: Upload, account: int, where: str, now: float) -> Rejection:
    database, table, unique_id = up.name
    n = up.stop - up.start
    first = group.envelopes[up.start]
    log.info(
        "dropped a repeated bulk import: %d records of %s.%s unique_id %r of account %d "
        "(journal %s:%d) loaded %s",
        n,
        database,
        table,
        unique_id,
        account,
        group.shard,
        group.seq,
        where,
    )
    detail = (
        f"unique_id {unique_id!r} was loaded {where} for this account and table: "
        f"these {n} records (places {first.import_index} to "
        f"{group.envelopes[up.stop - 1].import_index} of the chunk) were not loaded again"
    )
    found = rejection(first, group, Reject(DUPLICATE_UPLOAD, detail, account), now)
    return msgspec.structs.replace(found, record="")
