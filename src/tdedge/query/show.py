"""``SHOW SCHEMAS``, ``SHOW TABLES``, ``SHOW COLUMNS FROM t`` and ``DESCRIBE t``, answered
as Presto does.

From the job's own session, whose lake holds only the account's databases: another
account's tables are not there to be listed. ``SHOW SCHEMAS`` (``SHOW DATABASES``)
gives the account's databases in ``Schema``; ``SHOW TABLES`` gives one column,
``Table``, sorted (``LIKE`` filters it as SQL's LIKE does); ``SHOW COLUMNS`` and
``DESCRIBE`` give ``Column``, ``Type``, ``Extra`` and ``Comment``, in the table's column
order, types named as the engine names them (``bigint``, ``varchar``; Hive: ``string``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tdedge.query.statements import Show, ShowColumns, ShowSchemas, ShowTables
from tdedge.query.translate import TranslationError
from tdedge.query.types import engine_type

# {database: {table: {column: DuckDB type}}} in column order.
Columns = Mapping[str, Mapping[str, Mapping[str, str]]]
Answer = tuple[list[str], list[str], list[list[Any]]]  # names, DuckDB types, rows


def answer(statement: Show, columns: Columns, engine: str) -> Answer:
    if isinstance(statement, ShowTables):
        return _tables(statement, columns)
    if isinstance(statement, ShowSchemas):
        names = sorted(columns)
        if statement.like is not None:
            pattern = _like(statement.like)
            names = [n for n in names if pattern.fullmatch(n)]
        return ["Schema"], ["VARCHAR"], [[n] for n in names]
    return _columns(statement, columns, engine)


def _tables(statement: ShowTables, columns: Columns) -> Answer:
    tables = columns.get(statement.database)
    if tables is None:
        raise TranslationError(f"Schema '{statement.database}' does not exist")
    names = sorted(tables)
    if statement.like is not None:
        pattern = _like(statement.like)
        names = [n for n in names if pattern.fullmatch(n)]
    return ["Table"], ["VARCHAR"], [[n] for n in names]


def _columns(statement: ShowColumns, columns: Columns, engine: str) -> Answer:
    target = statement.target
    table = columns.get(target.database, {}).get(target.table)
    if table is None:
        raise TranslationError(f"Table '{target.database}.{target.table}' does not exist")
    rows: list[list[Any]] = [
        [name, engine_type(kind, engine), "", ""] for name, kind in table.items()
    ]
    return ["Column", "Type", "Extra", "Comment"], ["VARCHAR"] * 4, rows


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE (``%``, ``_``) as a regular expression."""
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile(regex, re.S | re.I)
