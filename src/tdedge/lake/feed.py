"""What arrives in the lake as it arrives: the rows each commit inserted, and the
import errors, for the console (api/console.py) and ``tdedge tail``.

It reads DuckLake's own record of its commits: each snapshot lists the tables it
inserted into (``ducklake_snapshot_changes``), and ``ducklake_table_changes`` gives
those rows with the snapshot that inserted each. A cursor is a snapshot id, so a
reader that polls misses nothing the lake still keeps; compaction expires snapshots
older than ``Settings.lake_retention_s``, and a cursor older than the oldest kept
starts again at the oldest. Reading costs a query of the snapshots since the cursor
and one per table that had inserts: nothing is scanned but the new rows.

Freshness comes from the same records: the time of the last commit that inserted
into each table.

The door each row came in by comes from ``tdedge_system.arrivals``, which the loader
writes with the rows (lake/system.py): per commit and table, runs of rows of one door
by their place among the rows the commit inserted. The rows a read returns of a
commit are its last ones (newest first, then cut), so a row's place is counted back
from the commit's last row, which every read that returns any of them returns too.
Rows committed before the lake recorded doors have none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import duckdb
import msgspec

from tdedge.errors import LakeError
from tdedge.lake.catalog import LAKE, META
from tdedge.lake.sql import literal
from tdedge.lake.system import ARRIVALS_NAME, DOOR_COUNTS
from tdedge.names import SYSTEM_DATABASE

# What a snapshot's changes call an insert: into files, or inlined in the catalog.
INSERTS = frozenset({"inserted_into_table", "inlined_insert"})
ERRORS_TABLE = "import_errors"
# A first read, without a cursor, starts this many snapshots back.
BACKFILL_SNAPSHOTS = 20

_SNAPSHOTS = f"""
SELECT s.snapshot_id, epoch(CAST(s.snapshot_time AS TIMESTAMPTZ)), c.changes_made
FROM {META}.ducklake_snapshot s
JOIN {META}.ducklake_snapshot_changes c ON c.snapshot_id = s.snapshot_id
WHERE s.snapshot_id > ? ORDER BY s.snapshot_id
"""
_BOUNDS = f"SELECT min(snapshot_id), max(snapshot_id) FROM {META}.ducklake_snapshot"
_TABLES = f"""
SELECT t.table_id, s.schema_name, t.table_name
FROM {META}.ducklake_table t JOIN {META}.ducklake_schema s ON s.schema_id = t.schema_id
WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL
"""


class Event(msgspec.Struct, kw_only=True):
    """One row a commit inserted, or one import error (``reason`` set)."""

    snapshot: int
    at: float  # the commit's time, unix seconds
    database: str
    table: str
    record: Any  # the row's columns; for an import error, the record as received
    reason: str | None = None
    detail: str | None = None
    door: str | None = None  # which door the record came in by, when recorded
    received_ms: int | None = None


class Changes(NamedTuple):
    cursor: int  # the last snapshot read: pass it as ``after`` next time
    events: list[Event]  # oldest first
    # (database, table) → time of the last commit that inserted into it, among the
    # snapshots read.
    inserted: dict[tuple[str, str], float]


# Which tables a reader may see: (database, table) → bool.
Wanted = Callable[[str, str], bool]


def read_changes(
    con: duckdb.DuckDBPyConnection,
    after: int | None,
    wanted: Wanted,
    *,
    account_id: int | None,
    limit: int,
) -> Changes:
    """The rows inserted into ``wanted`` tables, and the import errors of
    ``account_id`` (None: every account's, for the operator) in those tables, after
    snapshot ``after``; at most ``limit`` events of each table, the newest."""
    try:
        return _read(con, after, wanted, account_id, limit)
    except duckdb.Error as e:
        raise LakeError(str(e)) from e


def _read(
    con: duckdb.DuckDBPyConnection,
    after: int | None,
    wanted: Wanted,
    account_id: int | None,
    limit: int,
) -> Changes:
    bounds = con.execute(_BOUNDS).fetchone()
    if bounds is None or bounds[1] is None:
        return Changes(after or 0, [], {})
    oldest, latest = int(bounds[0]), int(bounds[1])
    start = latest - BACKFILL_SNAPSHOTS if after is None else after
    start = max(start, oldest - 1)
    if start >= latest:
        return Changes(latest, [], {})
    names = {int(tid): (str(s), str(t)) for tid, s, t in con.execute(_TABLES).fetchall()}
    first: dict[int, int] = {}  # table id → first snapshot (after start) inserting into it
    inserted: dict[tuple[str, str], float] = {}
    for snapshot, at, changes in con.execute(_SNAPSHOTS, [start]).fetchall():
        for change in str(changes or "").split(","):
            kind, _, ident = change.partition(":")
            if kind not in INSERTS or not ident.isdigit():
                continue
            found = names.get(int(ident))
            if found is None:
                continue
            first.setdefault(int(ident), int(snapshot))
            inserted[found] = float(at)
    times = dict(
        con.execute(
            f"SELECT snapshot_id, epoch(CAST(snapshot_time AS TIMESTAMPTZ)) "
            f"FROM {META}.ducklake_snapshot WHERE snapshot_id > ?",
            [start],
        ).fetchall()
    )
    doors = _doors(con, first, names, start, latest, wanted)
    events: list[Event] = []
    for table_id, since in first.items():
        schema, table = names[table_id]
        if schema == SYSTEM_DATABASE:
            if table == ERRORS_TABLE:
                events += _errors(con, since, latest, wanted, account_id, limit, times)
            continue
        if not wanted(schema, table):
            continue
        events += _rows(con, schema, table, since, latest, limit, times, doors)
    events.sort(key=lambda e: (e.snapshot, e.received_ms or 0))
    visible = {k: v for k, v in inserted.items() if k[0] != SYSTEM_DATABASE and wanted(*k)}
    return Changes(latest, events, visible)


# (snapshot, database, table) → the commit's door runs: (first row, rows, door).
Doors = dict[tuple[int, str, str], list[tuple[int, int, str]]]


def _doors(
    con: duckdb.DuckDBPyConnection,
    first: dict[int, int],
    names: dict[int, tuple[str, str]],
    start: int,
    until: int,
    wanted: Wanted,
) -> Doors:
    """The door runs of the commits after ``start`` (lake/system.py ARRIVALS)."""
    if (SYSTEM_DATABASE, ARRIVALS_NAME) not in {names[t] for t in first}:
        return {}
    source = (
        f"ducklake_table_changes({literal(LAKE)}, {literal(SYSTEM_DATABASE)}, "
        f"{literal(ARRIVALS_NAME)}, {int(start) + 1}, {int(until)})"
    )
    found: Doors = {}
    for snapshot, database, table, door, first_row, rows in con.execute(
        f"SELECT snapshot_id, database_name, table_name, door, first_row, rows FROM {source} "
        "WHERE change_type = 'insert' AND first_row IS NOT NULL"
    ).fetchall():
        if wanted(str(database), str(table)):
            runs = found.setdefault((int(snapshot), str(database), str(table)), [])
            runs.append((int(first_row), int(rows), str(door)))
    for runs in found.values():
        runs.sort()  # the changes come in no set order
    return found


def _door_of(runs: list[tuple[int, int, str]], place: int) -> str | None:
    """The door of the row at ``place`` among its commit's rows (from 0)."""
    for first_row, rows, door in runs:
        if first_row <= place < first_row + rows:
            return door
    return None


def _changes_sql(schema: str, table: str, since: int, until: int, limit: int, where: str) -> str:
    source = (
        f"ducklake_table_changes({literal(LAKE)}, {literal(schema)}, {literal(table)}, "
        f"{int(since)}, {int(until)})"
    )
    return (
        f"SELECT * FROM {source} WHERE change_type = 'insert' {where} "
        f"ORDER BY snapshot_id DESC, rowid DESC LIMIT {int(limit)}"
    )


def _rows(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    since: int,
    until: int,
    limit: int,
    times: dict[int, float],
    doors: Doors,
) -> list[Event]:
    cursor = con.execute(_changes_sql(schema, table, since, until, limit, ""))
    columns = [str(d[0]) for d in cursor.description or []]
    out = []
    # Newest first: the first row seen of a commit is its last.
    last: dict[int, int] = {}  # snapshot → row id of its last row
    for row in _rows_of(cursor):
        values = dict(zip(columns, row, strict=True))
        snapshot = int(values.pop("snapshot_id"))
        rowid = values.pop("rowid", None)
        values.pop("change_type", None)
        record = {k: v for k, v in values.items() if v is not None}
        door = None
        runs = doors.get((snapshot, schema, table))
        if runs and isinstance(rowid, int):
            end = last.setdefault(snapshot, rowid)
            total = runs[-1][0] + runs[-1][1]
            door = _door_of(runs, total - 1 - (end - rowid))
        out.append(
            Event(
                snapshot=snapshot,
                at=times.get(snapshot, 0.0),
                database=schema,
                table=table,
                record=record,
                door=door,
            )
        )
    out.reverse()
    return out


def _errors(
    con: duckdb.DuckDBPyConnection,
    since: int,
    until: int,
    wanted: Wanted,
    account_id: int | None,
    limit: int,
    times: dict[int, float],
) -> list[Event]:
    where = "" if account_id is None else f"AND account_id = {int(account_id)}"
    cursor = con.execute(_changes_sql(SYSTEM_DATABASE, ERRORS_TABLE, since, until, limit, where))
    columns = [str(d[0]) for d in cursor.description or []]
    out = []
    for row in reversed(_rows_of(cursor)):
        e = dict(zip(columns, row, strict=True))
        database, table = str(e["database_name"] or ""), str(e["table_name"] or "")
        if not wanted(database, table):
            continue
        snapshot = int(e["snapshot_id"])
        out.append(
            Event(
                snapshot=snapshot,
                at=times.get(snapshot, 0.0),
                database=database,
                table=table,
                record=_record(e["record"]),
                reason=str(e["reason"]),
                detail=e["detail"],
                door=e["door"],
                received_ms=e["received_ms"],
            )
        )
    return out


def _rows_of(cursor: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    # Through Arrow: DuckDB's own conversion of some types needs pandas or pytz.
    table = cursor.to_arrow_table()
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def _record(raw: Any) -> Any:
    """An import error's record: the JSON it was, when it parses; else the text."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(str(raw))
    except msgspec.DecodeError:
        return str(raw)


_LAST_INSERTS = f"""
SELECT epoch(CAST(s.snapshot_time AS TIMESTAMPTZ)), c.changes_made
FROM {META}.ducklake_snapshot s
JOIN {META}.ducklake_snapshot_changes c ON c.snapshot_id = s.snapshot_id
WHERE c.changes_made LIKE '%insert%' ORDER BY s.snapshot_id
"""


def last_inserts(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], float]:
    """(database, table) → the time of the last commit that inserted into it, among
    the snapshots the lake keeps (``lake_retention_s``)."""
    try:
        names = {int(tid): (str(s), str(t)) for tid, s, t in con.execute(_TABLES).fetchall()}
        found: dict[tuple[str, str], float] = {}
        for at, changes in con.execute(_LAST_INSERTS).fetchall():
            for change in str(changes or "").split(","):
                kind, _, ident = change.partition(":")
                if kind in INSERTS and ident.isdigit() and int(ident) in names:
                    found[names[int(ident)]] = float(at)
    except duckdb.Error as e:
        raise LakeError(str(e)) from e
    return found


def door_counts(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict[str, int]]:
    """(database, table) → door → rows loaded through it, since the lake recorded
    doors (lake/system.py ARRIVALS)."""
    try:
        found: dict[tuple[str, str], dict[str, int]] = {}
        for database, table, door, rows in con.execute(DOOR_COUNTS).fetchall():
            found.setdefault((str(database), str(table)), {})[str(door)] = int(rows)
    except duckdb.Error as e:
        raise LakeError(str(e)) from e
    return found
