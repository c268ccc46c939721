"""Which inserts of a commit DuckLake may inline into the catalog.

DuckLake keeps a small insert's rows in the SQLite catalog (data inlining) and writes
them at commit as the text of an SQL statement that DuckDB parses: a NUL becomes a
separate ``chr(0)`` argument of a ``concat`` and a single quote is doubled. Parsing
and binding that text takes time that grows faster than the number of those
characters (here: a value of 16 KiB of NULs 0.5 s, 64 KiB 3.5 s; 256 KiB of quotes
6 s, 1 MiB 97 s), and the one loader commit carries every account's rows. Other
characters cost what their length does.

So a commit inlines strings holding at most ``Settings.lake_inlining_max_escapes`` of
these characters in all, first come first served; the rows of a table past that
budget are written as a Parquet file instead (a Parquet file takes the same values at
their plain length), in the same transaction and with their values unchanged.

Inlining is switched per statement through DuckDB's setting for the lake's default
row limit, read when an insert is planned, which is why the lake is attached without
an explicit ``DATA_INLINING_ROW_LIMIT`` (that would take precedence over it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

# DuckDB's setting for DuckLake's row limit of inlined inserts.
ROW_LIMIT_SETTING = "ducklake_default_data_inlining_row_limit"
# The characters DuckLake's inlined write escapes at a cost that grows with their count.
_COSTLY = ("\x00", "'")


def costly_characters(table: pa.Table) -> int:
    """How many NULs and single quotes the string columns of ``table`` hold."""
    found = 0
    for column in table.columns:
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        for character in _COSTLY:
            counted = pc.sum(pc.count_substring(column, character)).as_py()
            found += int(counted or 0)
    return found


def set_row_limit(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """Inline inserts of at most ``rows`` rows on ``con`` from now on (0: none)."""
    con.execute(f"SET {ROW_LIMIT_SETTING} = {int(rows)}")


class Budget:
    """What one commit may still inline (see the module docstring)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, row_limit: int, escapes: int) -> None:
        self._con = con
        self._row_limit = row_limit
        self._left = escapes

    def admits(self, table: pa.Table) -> bool:
        """Whether ``table``'s rows may be inlined, counting them against the budget."""
        if self._row_limit <= 0 or table.num_rows > self._row_limit:
            return True  # not inlined anyway
        found = costly_characters(table)
        if found > self._left:
            return False
        self._left -= found
        return True

    @contextmanager
    def not_inlined(self) -> Iterator[None]:
        """Statements run inside write their rows as Parquet files."""
        set_row_limit(self._con, 0)
        try:
            yield
        finally:
            set_row_limit(self._con, self._row_limit)
