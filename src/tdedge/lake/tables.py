"""DDL that makes a lake table able to hold a batch of Arrow columns.

The lake applies types mechanically: a new column is added, a column whose type differs
is altered to the batch's type. Which changes are sensible is the loader's decision
(loader/schema.py); DuckLake itself refuses anything but widening (BIGINT → DOUBLE),
which surfaces as a LakeError.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from tdedge.errors import LakeError
from tdedge.lake.sql import ident

SQL_TYPES: dict[pa.DataType, str] = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
}

Columns = dict[str, str]  # column name → DuckDB type name, in table order


def sql_type(field: pa.Field) -> str:
    found = SQL_TYPES.get(field.type)
    if found is None:
        raise LakeError(f"column {field.name!r} has unsupported type {field.type}")
    return found


def create_table(ref: str, schema: pa.Schema) -> tuple[str, Columns]:
    columns = {f.name: sql_type(f) for f in schema}
    body = ", ".join(f"{ident(name)} {kind}" for name, kind in columns.items())
    return f"CREATE TABLE {ref} ({body})", columns


def evolve_table(
    ref: str, existing: Mapping[str, str], schema: pa.Schema
) -> tuple[list[str], Columns]:
    """ALTER statements for ``schema`` and the table's columns after them."""
    statements: list[str] = []
    columns = dict(existing)
    for f in schema:
        wanted = sql_type(f)
        current = columns.get(f.name)
        if current is None:
            statements.append(f"ALTER TABLE {ref} ADD COLUMN {ident(f.name)} {wanted}")
        elif current != wanted:
            statements.append(
                f"ALTER TABLE {ref} ALTER COLUMN {ident(f.name)} SET DATA TYPE {wanted}"
            )
        else:
            continue
        columns[f.name] = wanted
    return statements, columns
