"""What the loader hands the lake to commit at once: rows, import errors, bulk-import
ids, positions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import pyarrow as pa


@dataclass(frozen=True, slots=True)
class TableRows:
    """Rows for one table; the lake creates or widens the table to fit their columns.

    Column types are Arrow's int64, float64, string and bool, which the lake maps to
    BIGINT, DOUBLE, VARCHAR and BOOLEAN.
    """

    database: str
    table: str
    rows: pa.Table
    # Create the table even when ``rows`` is empty (CREATE TABLE … AS of no rows).
    create_empty: bool = False
    # The doors the rows came in by, as runs in row order: (door, rows). The lake
    # records them in ``tdedge_system.arrivals`` with the rows (lake/system.py); empty:
    # not recorded.
    doors: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Deletion:
    """Rows of one table a query job deletes, by DuckLake row id (the ``row_id`` column
    of ``rows``); ``rows`` None deletes every row."""

    database: str
    table: str
    rows: pa.Table | None


class JobWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``tdedge_system.job_writes``: a query job's write is in the lake.

    Written in the same transaction as the job's rows, so a job run again (its runner
    died after the commit) or a commit that reported an error after landing is known
    and never written twice."""

    job_id: int
    database_name: str
    table_name: str
    rows: int
    time: int  # unix seconds of the commit


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``tdedge_system.import_errors``: a record that was not loaded, and why."""

    time: int  # unix seconds of the rejection
    received_ms: int
    reason: str
    detail: str
    door: str
    database_name: str
    table_name: str
    key_id: str  # control.keys.key_id(hash): never the secret
    account_id: int | None
    record: str  # the raw JSON text as received
    journal_shard: str
    journal_seq: int


# (account_id, database, table, unique_id), names normalised: an account's id, never
# another's, even for a database that changed hands.
ImportKey = tuple[int, str, str, str]


class BulkImport(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``tdedge_system.bulk_imports``: (part of) an ``import_with_id`` upload,
    loaded once.

    Its records went to the table or, those refused one by one, to the import errors;
    a later upload of the same key is dropped (loader/imports.py). An upload larger
    than a journal group has a row per group.
    """

    database_name: str
    table_name: str
    unique_id: str
    records: int
    journal_shard: str  # the journal group that carried the upload (or this part)
    journal_seq: int
    time: int  # unix seconds of the load
    account_id: int
    attempt: str  # the upload's token (Envelope.import_attempt): its later parts load


class LoadMark(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``tdedge_system.load_marks``: this table's rows of the journal entries
    past the shard's position, up to ``seq``, are in the lake already.

    Written when the loader commits a batch's tables apart to find one the lake refuses
    (loader/runner.py): the positions move only once every table is done, and a loader
    that starts again before that skips what the marks say is loaded.
    """

    shard: str
    seq: int
    database_name: str
    table_name: str
    time: int  # unix seconds of the commit


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one lake transaction writes; ``positions`` holds only shards that moved."""

    tables: Sequence[TableRows] = ()
    rejections: Sequence[Rejection] = ()
    positions: Mapping[str, int] = field(default_factory=dict)
    imports: Sequence[BulkImport] = ()
    marks: Sequence[LoadMark] = ()
    deletions: Sequence[Deletion] = ()
    jobs: Sequence[JobWrite] = ()
    # The stored position each journal shard of the batch was read from (-1: none was
    # stored). On a lake other nodes share, the commit is refused unless they are still
    # the stored positions (lake/fence.py): the batch's records are another loader's.
    read_from: Mapping[str, int] = field(default_factory=dict)

    @staticmethod
    def reading(positions: Mapping[str, int], shards: Iterable[str]) -> dict[str, int]:
        """``read_from`` for a batch of ``shards`` read after ``positions``."""
        return {shard: positions.get(shard, -1) for shard in shards}

    @property
    def row_count(self) -> int:
        return sum(t.rows.num_rows for t in self.tables)
