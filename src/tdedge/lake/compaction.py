"""What a compaction pass works on, table by table, and the DuckLake calls it makes.

DuckLake's lake-wide maintenance calls visit every table, whether it changed or not,
and each DuckLake transaction first reads the whole catalog again: with 1,000 one-row
tables here, ``ducklake_flush_inlined_data`` over the lake took 31 s and
``ducklake_merge_adjacent_files`` 32 s, and 15-18 s again with nothing left to do. So a
pass asks the catalog which tables have work (one query each), then flushes and merges
only those, several tables per transaction, in slices of bounded time (Lake.compaction)
between which the loader keeps loading.

- A table has rows inlined in the catalog when its record count (DuckLake's table
  statistics) is more than the rows of its live data files; tdedge's own tables, whose
  rows compaction deletes, are always flushed (but ``upgrades``, never deleted from).
- A table is worth merging when it has two live data files or more under
  ``MERGE_BELOW_BYTES``: what small commits and flushes leave. One whose small files
  are the same after a merge (files DuckLake does not merge) is not asked again until
  a new one comes.
"""

from __future__ import annotations

from typing import NamedTuple

from tdedge.lake.catalog import LAKE, META
from tdedge.lake.sql import literal
from tdedge.names import SYSTEM_DATABASE

# Files under this size are what many small commits and flushes leave behind.
MERGE_BELOW_BYTES = 64 * 1024 * 1024

# (schema, table, has inlined rows, small live files, newest small file's id) of every
# live table.
TABLES_WITH_WORK = f"""
SELECT s.schema_name, t.table_name,
    coalesce(st.record_count, 0) > coalesce(f.records, 0)
        OR (s.schema_name = {literal(SYSTEM_DATABASE)} AND t.table_name <> 'upgrades')
        AS inlined,
    coalesce(f.small, 0) AS small_files,
    coalesce(f.newest, 0) AS newest_small
FROM {META}.ducklake_table t
JOIN {META}.ducklake_schema s ON s.schema_id = t.schema_id
LEFT JOIN {META}.ducklake_table_stats st ON st.table_id = t.table_id
LEFT JOIN (
    SELECT table_id, sum(record_count) AS records,
        count(*) FILTER (WHERE file_size_bytes < {MERGE_BELOW_BYTES}) AS small,
        max(data_file_id) FILTER (WHERE file_size_bytes < {MERGE_BELOW_BYTES}) AS newest
    FROM {META}.ducklake_data_file WHERE end_snapshot IS NULL GROUP BY table_id
) f ON f.table_id = t.table_id
WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL
ORDER BY s.schema_name, t.table_name
"""


class Slice(NamedTuple):
    """What one slice of a pass did: a step ("prune", "flush", "merge", "expire",
    "cleanup", "orphans") and the tables it did it to (none for lake-wide steps, and
    for a slice that failed)."""

    step: str
    tables: tuple[tuple[str, str], ...] = ()


def flush_call(schema: str, table: str) -> str:
    return (
        f"CALL ducklake_flush_inlined_data({literal(LAKE)}, "
        f"schema_name => {literal(schema)}, table_name => {literal(table)})"
    )


def merge_call(schema: str, table: str) -> str:
    return (
        f"CALL ducklake_merge_adjacent_files({literal(LAKE)}, {literal(table)}, "
        f"schema => {literal(schema)})"
    )


def rewrite_call(schema: str, table: str) -> str:
    """Rewrite the table's files whose rows are (almost) all deleted, ending them: a
    file flushed from inlined rows keeps being read, with a deletion file beside it,
    however few of its rows are left, and would stay on disk for good."""
    return (
        f"CALL ducklake_rewrite_data_files({literal(LAKE)}, {literal(table)}, "
        f"schema => {literal(schema)})"
    )
