"""Changes a lake made by an older tdedge needs, made once by the loader when it starts.

Each upgrade runs in one DuckLake transaction with its row in
``tdedge_system.upgrades``: a crash leaves the lake as it was, to be upgraded at the
next start, and an upgrade done is never done again (``Lake.upgrade``). A lake made by
this version gets the rows at its first start, with nothing to change.

``record_ids``
    tdedge used to keep its own id of each record the Data Ingestion API stored in a
    ``td_uuid`` column, and refused events carrying their own td_uuid. That column is
    the mobile SDKs' (their device id, ``enableAutoAppendUniqId()``): tdedge's id is
    now ``_tdedge_id`` and td_uuid holds what clients send. In each user table with a
    VARCHAR ``td_uuid`` column and no ``_tdedge_id``:

    - when every value in it looks like tdedge's ids (version-7 UUIDs in lower case,
      ``TDEDGE_ID``), the column is renamed: no data is rewritten, and queries of the
      old rows find them under the new name;
    - when only some do — clients sent their own td_uuid to another door (Postback,
      the pixel), which took it — a ``_tdedge_id`` column is added and those values
      move to it; the others stay where they were;
    - when none do, the column was the clients' all along and stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import duckdb

from tdedge.lake.catalog import LAKE
from tdedge.lake.sql import ident, literal, table_ref
from tdedge.lake.system import UPGRADES
from tdedge.names import RECORD_ID, SYSTEM_DATABASE

log = logging.getLogger("tdedge.lake")

RECORD_IDS = "record_ids"
OLD_COLUMN = "td_uuid"
# What tdedge's own ids look like (edge/ingest.py, uuids).
TDEDGE_ID = "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"

Table = tuple[str, str]  # (schema, table)
Columns = dict[str, str]


def record_ids(con: duckdb.DuckDBPyConnection, tables: Iterable[tuple[Table, Columns]]) -> int:
    """The ``record_ids`` upgrade of ``tables`` (with their columns) inside the caller's
    transaction; returns how many tables it changed."""
    changed = 0
    for (schema, table), columns in tables:
        if schema == SYSTEM_DATABASE or columns.get(OLD_COLUMN) != "VARCHAR":
            continue
        ref = table_ref(LAKE, schema, table)
        if RECORD_ID in columns:
            log.warning("%s has both td_uuid and %s: left as it is", ref, RECORD_ID)
            continue
        old, new = ident(OLD_COLUMN), ident(RECORD_ID)
        ours = f"regexp_full_match({old}, {literal(TDEDGE_ID)})"
        found = con.execute(f"SELECT count({old}), count(*) FILTER (WHERE {ours}) FROM {ref}")
        values, tdedge = found.fetchone() or (0, 0)
        if not tdedge:
            continue
        if tdedge == values:
            con.execute(f"ALTER TABLE {ref} RENAME COLUMN {old} TO {new}")
        else:
            con.execute(f"ALTER TABLE {ref} ADD COLUMN {new} VARCHAR")
            con.execute(f"UPDATE {ref} SET {new} = {old}, {old} = NULL WHERE {ours}")
        log.info(
            "%s: %d values of td_uuid are tdedge's own ids, now in %s (%d stay in td_uuid)",
            ref,
            tdedge,
            RECORD_ID,
            values - tdedge,
        )
        changed += 1
    return changed


Step = Callable[[duckdb.DuckDBPyConnection, Iterable[tuple[Table, Columns]]], int]
# Every upgrade, in the order they run: its name (its row in ``upgrades``) and its step.
STEPS: dict[str, Step] = {RECORD_IDS: record_ids}

READ_DONE = f"SELECT name FROM {UPGRADES}"
RECORD_DONE = f"INSERT INTO {UPGRADES} (name, time) VALUES (?, ?)"
