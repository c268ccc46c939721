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

# The columns tdedge adds itself start with this, and no client's key may: ``td_*`` is
# the clients' namespace (the SDKs send td_uuid, td_ip, td_session_id, … and expect
# them stored as sent), so a column of tdedge's own named like those would one day
# collide with a client's. No SDK or webhook sends a key with a leading underscore
# and tdedge's name, and refusing those keys (the ingest door answers
# InvalidPropertyNameError; other doors' values go to td_type_conflicts) means a
# client can never write or forge one of tdedge's columns.
RESERVED_PREFIX = "_tdedge_"
# tdedge's own id of each record the SDK doors store (edge/ingest.py): a version-7
# UUID made on arrival. The loader writes it from the journal entry, never from the
# record (loader/records.py).
RECORD_ID = RESERVED_PREFIX + "id"
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
