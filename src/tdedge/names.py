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


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def normalize(name: str) -> str:
    return name.lower()


def is_reserved(database: str) -> bool:
    return database.lower() == SYSTEM_DATABASE
