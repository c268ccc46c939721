"""Quoting for the identifiers and literals tdedge splices into DuckDB statements.

Values go through parameters wherever DuckDB accepts them; names and the paths in
ATTACH/LOAD cannot, so they are quoted here and nowhere else.
"""

from __future__ import annotations


def ident(name: str) -> str:
    """A double-quoted identifier: any column name a record may carry is safe."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A single-quoted string literal."""
    return "'" + text.replace("'", "''") + "'"


def table_ref(catalog: str, schema: str, table: str) -> str:
    return f"{ident(catalog)}.{ident(schema)}.{ident(table)}"
