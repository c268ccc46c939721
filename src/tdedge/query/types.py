"""DuckDB result types as Presto and Hive name them in ``hive_result_schema``."""

from __future__ import annotations

from functools import lru_cache

from sqlglot import exp
from sqlglot.errors import SqlglotError

# DuckDB widens sums and unsigned integers where Presto keeps bigint.
_WIDE_INTEGERS = frozenset({"HUGEINT", "UHUGEINT", "UBIGINT", "UINTEGER"})


@lru_cache(maxsize=256)
def engine_type(duckdb_type: str, engine: str) -> str:
    """``BIGINT`` → ``bigint``; ``VARCHAR`` → ``varchar`` (Presto) or ``string`` (Hive)."""
    dialect = "hive" if engine == "hive" else "trino"
    if duckdb_type.upper() in _WIDE_INTEGERS:
        return "bigint"
    try:
        built = exp.DataType.build(duckdb_type, dialect="duckdb")
        return built.sql(dialect=dialect).lower()
    except (SqlglotError, ValueError):
        return duckdb_type.lower()
