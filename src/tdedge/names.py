"""Database and table names, as the Postback documents define them.

"Only alphabets/numbers or _ are allowed." DuckDB compares identifiers without regard
to case, so tdedge folds names to lower case: ``Test_DB`` and ``test_db`` are the same
database, and a record sent to either lands in one table.
"""

from __future__ import annotations

import re

NAME_RULE = "only letters, digits and _ are allowed (1 to 128 characters)"
_NAME = re.compile(r"[A-Za-z0-9_]{1,128}")

# Schemas tdedge keeps for itself inside the lake.
SYSTEM_DATABASE = "tdedge_system"
# Names DuckDB or DuckLake give their own catalogs and schemas. A database named like
# one could be confused with it in SQL (``__ducklake_metadata_lake.…`` is the lake's
# catalog, ``system.main.…`` DuckDB's), so no account may have one.
RESERVED_DATABASES = frozenset(
    {
        SYSTEM_DATABASE,
        "main",
        "system",
        "temp",
        "memory",
        "lake",
        "information_schema",
        "pg_catalog",
        "default",
    }
)
RESERVED_PREFIXES = ("__", "ducklake", "duckdb", "sqlite", "pg_", "tdedge")

# The column where a record's values that did not fit their column's type are kept, as
# JSON (loader/schema.py); the lake makes it on every table that needs it.
CONFLICTS = "td_type_conflicts"


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def normalize(name: str) -> str:
    return name.lower()


def is_reserved(database: str) -> bool:
    name = database.lower()
    return name in RESERVED_DATABASES or name.startswith(RESERVED_PREFIXES)
