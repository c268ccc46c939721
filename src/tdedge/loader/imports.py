"""Bulk imports load once per unique_id: what makes ``import_with_id`` exactly-once.

fluent-plugin-td uploads a chunk again, with the same unique_id, after a timeout. The
edge answers a retry it already knows at once (control/imports.py), but it journals a
chunk before it records the id, so an edge killed in between, or two uploads racing on
two workers, journal the chunk twice. The loader decides: every envelope of an upload
carries the unique_id and its place in the chunk (``Envelope.import_id``,
``import_index``), and of each (database, table, unique_id) the loader keeps the first
upload it meets and drops the others:

- an upload whose key is in ``tdedge_system.bulk_imports`` was loaded by an earlier
  batch;
- of several uploads of one key in a batch, the first in the batch's order is kept.
  Two uploads in one journal group (one edge loop iteration) are told apart by their
  places, each upload's starting at 0.

Kept uploads go into ``bulk_imports`` in the batch's own transaction, with its rows and
positions (lake/lake.py): a crash leaves both or neither. Dropping is not an error: the
positions move past the dropped envelopes, which are counted
(``tdedge_import_duplicates_total``) and logged. An upload whose records are refused
(an unknown key, say) counts as loaded as well: its records are in the import errors,
once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.lake.batch import BulkImport, ImportKey
from tdedge.names import normalize

log = logging.getLogger("tdedge.loader")

_import_id = attrgetter("import_id")


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload's envelopes: ``groups[group].envelopes[start:stop]``."""

    key: ImportKey
    group: int
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class Sifted:
    groups: Sequence[JournalGroup]  # the batch without the dropped envelopes
    imports: list[BulkImport]  # the uploads kept
    dropped: int = 0  # envelopes dropped


def uploads(groups: Sequence[JournalGroup]) -> list[Upload]:
    """The uploads with a unique_id in ``groups``, in order."""
    found: list[Upload] = []
    for g, group in enumerate(groups):
        envs = group.envelopes
        # The hot path: most groups carry no import id, and this checks them in C.
        if not any(map(_import_id, envs)):
            continue
        key: ImportKey | None = None
        start = 0
        for i, env in enumerate(envs):
            here = _key(env) if env.import_id else None
            if here != key or (here is not None and env.import_index == 0):
                if key is not None:
                    found.append(Upload(key, g, start, i))
                key, start = here, i
        if key is not None:
            found.append(Upload(key, g, start, len(envs)))
    return found


def sift(
    groups: Sequence[JournalGroup], found: Sequence[Upload], loaded: set[ImportKey], now: float
) -> Sifted:
    """Keep the first upload of each key not ``loaded`` yet; drop the others."""
    kept: set[ImportKey] = set()
    imports: list[BulkImport] = []
    dropped: dict[int, list[Upload]] = {}
    for up in found:
        if up.key in loaded or up.key in kept:
            dropped.setdefault(up.group, []).append(up)
            where = "by an earlier batch" if up.key in loaded else "earlier in this batch"
            _log_dropped(groups[up.group], up, where)
            continue
        kept.add(up.key)
        group = groups[up.group]
        database, table, unique_id = up.key
        imports.append(
            BulkImport(
                database_name=database,
                table_name=table,
                unique_id=unique_id,
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
    return Sifted(out, imports, n)


def _key(env: Envelope) -> ImportKey:
    return (normalize(env.database), normalize(env.table), env.import_id)


def _log_dropped(group: JournalGroup, up: Upload, where: str) -> None:
    database, table, unique_id = up.key
    log.info(
        "dropped a repeated bulk import: %d records of %s.%s unique_id %r (journal %s:%d) "
        "loaded %s",
        up.stop - up.start,
        database,
        table,
        unique_id,
        group.shard,
        group.seq,
        where,
    )
