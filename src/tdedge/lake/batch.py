"""What the loader hands the lake to commit at once: rows, import errors, bulk-import
ids, positions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    @property
    def row_count(self) -> int:
        return sum(t.rows.num_rows for t in self.tables)
