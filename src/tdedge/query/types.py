"""DuckDB result types as Presto and Hive name them in ``hive_result_schema``."""

from __future__ import annotations

from functools import lru_cache

from sqlglot import exp
from sqlglot.errors import SqlglotError

# DuckDB widens sums and unsigned integers where Presto keeps bigint.
_WIDE_INTEGERS = frozenset({"HUGEINT", "UHUGEINT", "UBIGINT", "UINTEGER"})
# DuckDB's own types, by the Presto type of the values the result carries for them
# (query/values.py): timestamps of any precision print as Presto's, and types Presto
# lacks arrive as text.
_AS_PRESTO = {
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "TIME WITH TIME ZONE": "varchar",
    "INTERVAL": "interval day to second",
    "BIT": "varchar",
    "BIGNUM": "varchar",
    "VARINT": "varchar",
}
# What the session casts to VARCHAR before reading (query/session.py): their Arrow
# form is bytes or drops the zone.
TEXT_TYPES = frozenset({"BIT", "BIGNUM", "VARINT", "TIME WITH TIME ZONE"})


@lru_cache(maxsize=256)
def engine_type(duckdb_type: str, engine: str) -> str:
    """``BIGINT`` → ``bigint``; ``VARCHAR`` → ``varchar`` (Presto) or ``string`` (Hive)."""
    dialect = "hive" if engine == "hive" else "trino"
    upper = duckdb_type.upper()
    if upper in _WIDE_INTEGERS:
        return "bigint"
    if upper in _AS_PRESTO:
        found = _AS_PRESTO[upper]
        if engine == "hive":
            return "string" if found == "varchar" else found.split(" ")[0]
        return found
    if upper.startswith("ENUM("):
        return "string" if engine == "hive" else "varchar"
    try:
        built = exp.DataType.build(duckdb_type, dialect="duckdb")
        return built.sql(dialect=dialect).lower()
    except (SqlglotError, ValueError):
        return duckdb_type.lower()
