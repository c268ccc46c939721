"""The fence: a batch commits only while the journal positions it was read from are
still the stored ones, so a loader that lost a partition's lease and wakes up with a
batch it read before cannot load those records a second time.

Only on a lake other nodes share (a ``lake_catalog``), the only kind more than one
loader writes positions to: the embedded lake is the data dir's, whose one ``serve``
(instance.py) runs one loader. There the check would cost every commit a read of
``journal_positions`` for nothing (about 11 ms of CPU on a commit of ~40 here:
DuckLake reads a table through several catalog queries).

Checked inside the commit's own transaction by reading the shards' stored positions,
the transaction's first statement: DuckLake takes its snapshot there, so the read sees
every commit made before it. That read alone would not do when two commits overlap:
DuckLake is snapshot-isolated, both would read the same position, and appends to
``journal_positions`` never conflict with each other. What makes the later one fail:

- a SQLite catalog: every process that writes it holds the lake's write lock
  (catalog.write_lock) around its whole transaction, and SQLite itself refuses the
  later of two overlapping commits ("database is locked"). Either way the later
  commit's read (at its retry) sees the moved position.
- a PostgreSQL catalog (whose write lock is each node's own) has no such lock, so
  each commit also rewrites the one row of a table kept for the shard (on a SQLite
  catalog too, where it makes no difference),
  ``tdedge_system.journal_fence_<shard>``. DuckLake refuses a commit that inserts into
  or deletes from a table another transaction deleted from since its snapshot
  ("Transaction conflict"), so of two overlapping commits of one shard one fails; it
  is tried again, and its read then sees the moved position. DuckLake's conflicts are
  per table: with a table per shard, commits of different shards never conflict here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import duckdb

from tdedge.lake import system
from tdedge.lake.catalog import LAKE
from tdedge.lake.sql import table_ref
from tdedge.lake.tables import Columns
from tdedge.names import SYSTEM_DATABASE

FENCE_PREFIX = "journal_fence_"
# Shard names become table names (and folder names in the lake's data path). Two shards
# whose names differ only in these characters share a fence: their commits wait for
# each other, and nothing more.
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def moved(con: duckdb.DuckDBPyConnection, read_from: Mapping[str, int]) -> list[str]:
    """The shards (as stored) whose position is not the one in ``read_from`` (-1: none
    stored) in the transaction open on ``con``."""
    found = {
        str(shard): int(seq)
        for shard, seq in con.execute(system.READ_SHARD_POSITIONS, [list(read_from)]).fetchall()
    }
    return sorted(shard for shard, seq in read_from.items() if found.get(shard, -1) != seq)


def table_name(shard: str) -> str:
    return FENCE_PREFIX + _UNSAFE.sub("_", shard)


def claim(
    con: duckdb.DuckDBPyConnection,
    shard: str,
    seq: int,
    columns: dict[tuple[str, str], Columns],
) -> None:
    """Rewrite ``shard``'s fence row in the transaction open on ``con`` (its value is
    the shard's position after the commit, for whoever looks); creates the table the
    first time, which conflicts just as well with another transaction creating it."""
    key = (SYSTEM_DATABASE, table_name(shard))
    ref = table_ref(LAKE, *key)
    if key in columns:
        con.execute(f"UPDATE {ref} SET seq = ?", [seq])
    else:
        con.execute(f"CREATE TABLE {ref} AS SELECT CAST(? AS BIGINT) AS seq", [seq])
        columns[key] = {"seq": "BIGINT"}
