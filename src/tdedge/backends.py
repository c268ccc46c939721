"""Where a process gets its backends: the one place that reads the settings and opens
the journal, its reader, the control store and the profile store.

Every caller asks here and holds the Protocol it gets (``Journal``, ``JournalReader``,
``ProfileStore``; the control store is SQLAlchemy's, and so speaks to any database
SQLAlchemy does). Each kind has one implementation today, embedded in the data dir:
SQLite files. The scale-out backends (PostgreSQL, NATS JetStream, Redis) join here,
chosen by the settings, and each joins its kind's contract test suite by adding one
fixture parameter (tests/unit/contracts/); no caller changes.
"""

from __future__ import annotations

from tdedge.config import Settings
from tdedge.control.store import ControlStore
from tdedge.journal.base import Journal, JournalReader
from tdedge.journal.sqlite import SQLiteJournal, SQLiteJournalReader
from tdedge.realtime import sqlite as profile_sqlite
from tdedge.realtime.store import ProfileStore


def journal(settings: Settings) -> Journal:
    """The edge's side of the journal: this process's shard, for appending."""
    return SQLiteJournal(settings)


def journal_reader(settings: Settings) -> JournalReader:
    """The loader's side of the journal: every shard, for reading and releasing."""
    return SQLiteJournalReader(settings.journal_dir)


def control(settings: Settings) -> ControlStore:
    """Accounts, keys, databases, jobs, p13n configurations: one engine per process."""
    return ControlStore.connect(settings.control_url, settings.max_databases_per_account)


def profiles(settings: Settings) -> ProfileStore:
    """The real-time profiles."""
    return profile_sqlite.SQLiteProfileStore(profile_sqlite.default_path(settings.root))
