"""How long import-error rows, and the rows of tables given a retention, are kept:
compaction deletes older ones.

The import errors hold refused records, kept to be looked into rather than forever;
refusals are counted by metrics whatever happens to their rows. Without a retention the
table grows with every refused request, for good. ``expire_import_errors`` deletes the
rows refused (``time``) more than ``Settings.import_errors_retention_s`` ago, on the
loader's lake connection; compaction calls it beside the other expiries, inside the
same retries.
"""

from __future__ import annotations

import duckdb

from tdedge.errors import LakeError
from tdedge.lake.system import IMPORT_ERRORS

# Counted first: a DELETE that matches nothing still costs a DuckLake commit.
COUNT_EXPIRED_ERRORS = f"SELECT count(*) FROM {IMPORT_ERRORS} WHERE time < ?"
EXPIRE_ERRORS = f"DELETE FROM {IMPORT_ERRORS} WHERE time < ?"


def expire_import_errors(con: duckdb.DuckDBPyConnection, now: float, retention_s: float) -> int:
    """Delete the import-error rows older than ``retention_s`` at ``now`` (unix seconds);
    return how many there were."""
    cutoff = int(now - retention_s)
    try:
        found = con.execute(COUNT_EXPIRED_ERRORS, [cutoff]).fetchone()
        expired = int(found[0]) if found else 0
        if expired:
            con.execute(EXPIRE_ERRORS, [cutoff])
    except duckdb.Error as e:
        raise LakeError(str(e)) from e
    return expired


def expire_table_rows(con: duckdb.DuckDBPyConnection, ref: str, cutoff: int) -> int:
    """Delete the rows of table ``ref`` whose ``time`` is before ``cutoff`` (unix
    seconds); return how many there were. DuckLake ends a data file written by an
    INSERT whose rows are all deleted, but gives one flushed from inlined rows (most
    of the loader's) a deletion file instead: compaction then rewrites the files left
    (almost) empty (compaction.rewrite_call), and the ended files go with the
    snapshots that still used them (``lake_retention_s``). A table loaded in time
    order so sheds whole files as its days expire."""
    try:
        found = con.execute(f"SELECT count(*) FROM {ref} WHERE time < ?", [cutoff]).fetchone()
        expired = int(found[0]) if found else 0
        if expired:
            con.execute(f"DELETE FROM {ref} WHERE time < ?", [cutoff])
    except duckdb.Error as e:
        raise LakeError(str(e)) from e
    return expired
