"""Where a process gets its backends: the one place that reads the settings and opens
the journal, its reader, the control store and the profile store.

Every caller asks here and holds the Protocol it gets (``Journal``, ``JournalReader``,
``ProfileStore``; the control store is SQLAlchemy's, and so speaks to any database
SQLAlchemy does). The embedded default is SQLite files in the data dir; the settings
choose the shared ones by URL: the control plane on PostgreSQL (``control``), the
profiles on Redis (``profiles``); the lake's catalog and files are chosen the same way
in lake/location.py; the journal on NATS JetStream (``journal``). Each backend runs
its kind's contract suite (tests/unit/contracts/); no caller changes.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import Engine

from tdedge.config import Settings
from tdedge.control.bulk_sessions import BulkSessions
from tdedge.control.jobs import JobStore
from tdedge.control.leases import Lease, holder_id
from tdedge.control.store import ControlStore, engine_for
from tdedge.journal.base import Journal, JournalReader
from tdedge.journal.sqlite import SQLiteJournal, SQLiteJournalReader, unreleased
from tdedge.realtime import batch
from tdedge.realtime import sqlite as profile_sqlite
from tdedge.realtime.batch import BatchStore, SQLiteBatchStore
from tdedge.realtime.batch_shared import RefreshStores, Replica, SharedBatchStore
from tdedge.realtime.errors import ProfileStoreDown
from tdedge.realtime.registry import Registry
from tdedge.realtime.store import ProfileStore
from tdedge.results.store import ResultFiles, ResultStore


def journal(settings: Settings) -> Journal:
    """The edge's side of the journal: this process's shard, for appending."""
    if settings.journal:
        # The client library is imported only when the journal is on NATS.
        from tdedge.journal.jetstream import JetStreamJournal

        return JetStreamJournal(settings)
    return SQLiteJournal(settings)


def journal_reader(settings: Settings) -> JournalReader:
    """The loader's side of the journal: every shard, for reading and releasing."""
    if settings.journal:
        from tdedge.journal.jetstream import JetStreamJournalReader

        return JetStreamJournalReader(settings)
    return SQLiteJournalReader(settings.journal_dir)


def unloaded(settings: Settings) -> tuple[int, int | None] | None:
    """What the journal holds that no loader has released yet: (records, arrival ms of
    the oldest), read from its files, for the operator's views (``tdedge status``, the
    console) when no loader beats to say it (``serve --no-loader``), which is when
    records pile up. None for a journal on NATS, whose partitions only loaders read,
    or files that cannot be read."""
    if settings.journal:
        return None
    try:
        return unreleased(settings.journal_dir)
    except sqlite3.Error:
        return None


def control(settings: Settings) -> ControlStore:
    """Accounts, keys, databases, jobs, p13n configurations: one engine per process."""
    return ControlStore.connect(settings.control_url, settings.max_databases_per_account)


def profiles(settings: Settings) -> ProfileStore:
    """The real-time profiles: Redis when ``settings.profiles`` names a server (the
    client library is imported only then), else the SQLite file in the data dir."""
    if settings.profiles.startswith(("redis://", "rediss://", "unix://")):
        from tdedge.realtime.redis import RedisProfileStore

        return RedisProfileStore(settings.profiles)
    if settings.profiles:
        raise ProfileStoreDown(f"profiles: {settings.profiles!r} is not a redis:// URL")
    return profile_sqlite.SQLiteProfileStore(profile_sqlite.default_path(settings.root))


# Shared control state. Every table of the control plane (accounts and keys above; jobs,
# the import ledger, retention rules, the p13n registry, bulk import sessions here) is
# opened on the one control URL, so nodes given the same URL share all of it.


def control_engine(settings: Settings) -> Engine:
    """A new engine on the control database, for a store that owns its own (the CLI,
    the job runner); a worker's stores share its ControlStore's ``engine`` instead."""
    return engine_for(settings.control_url)


def jobs(settings: Settings) -> JobStore:
    return JobStore(control_engine(settings))


def registry(settings: Settings) -> Registry:
    return Registry(control_engine(settings), owns_engine=True)


def bulk_sessions(settings: Settings) -> BulkSessions:
    """Embedded: a SQLite file of its own beside the control database, so that storing
    a large part never holds the lock keys and jobs are written under. On a shared
    control database the sessions and their parts (bytea) live there: any node takes
    any part of any session, and commits a session whose parts came through others."""
    if not settings.control:
        return BulkSessions.open(settings.bulk_sessions_db)
    return BulkSessions(control_engine(settings))


# p13n batch facts. Embedded: the data dir's SQLite file, which refreshes write and the
# edge reads. On a shared control database: the facts live there, one node's refresher
# at a time computes them (a lease), and each node's refresher copies them into its own
# file, which its edge reads as in the embedded case (realtime/batch_shared.py).

# The lease the nodes' refreshers compute the batch facts under.
REFRESH_LEASE = "p13n-refresh"


def batch_store(settings: Settings) -> BatchStore:
    """Where the batch facts are kept (what ``tdedge p13n refresh`` writes to)."""
    if not settings.control:
        return SQLiteBatchStore(batch.default_path(settings.root))
    return SharedBatchStore(control_engine(settings), node=holder_id())


def refresh_stores(settings: Settings) -> RefreshStores:
    """What the loader's refresher works on (realtime/refresh.py)."""
    if not settings.control:
        return RefreshStores(SQLiteBatchStore(batch.default_path(settings.root)))
    engine = control_engine(settings)
    holder = holder_id()
    shared = SharedBatchStore(engine, node=holder)
    return RefreshStores(
        shared,
        Replica(shared, SQLiteBatchStore(batch.default_path(settings.root))),
        Lease(engine, REFRESH_LEASE, holder, settings.p13n_refresh_lease_s),
    )


def results(settings: Settings) -> ResultStore:
    """Where job results are kept: beside the lake's files when those are on S3, so that
    any node serves a result any node's runner wrote (the S3 client is imported only
    then); else the data dir's ``results/``."""
    if settings.lake_data_s3:
        from tdedge.results.objects import ResultObjects

        return ResultObjects(settings.lake_data, settings.root / "run" / "result-tmp")
    return ResultFiles(settings.job_results_dir)
