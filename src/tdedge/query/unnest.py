"""``UNNEST(column)`` of a column that holds arrays as JSON text.

Ingest keeps an array sent through the APIs as its JSON text in a VARCHAR column
(loader/schema.py), where TD keeps ``array(varchar)``; TD users unnest it as it is,
``CROSS JOIN UNNEST(tags) AS t(tag)``. An UNNEST whose argument is a bare column that
is VARCHAR in a table the statement reads becomes
``UNNEST(CAST(json_parse(column) AS ARRAY(VARCHAR)))`` — the form TD users write
themselves for JSON text, which is left as it is — so each element comes out as
varchar, as TD gives it (a number as its digits, an object as its JSON text).
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from tdedge.query.translate import ENGINES

# {database: {table: {column: DuckDB type}}}, as the session lists the lake's columns.
Columns = Mapping[str, Mapping[str, Mapping[str, str]]]


def rewrite(query: str, engine: str, database: str | None, columns: Columns) -> str:
    """``query`` with UNNEST of JSON-text columns parsed first; unchanged when there
    is none (or when it does not parse: the translator then says why)."""
    if "unnest" not in query.lower():
        return query
    dialect = ENGINES.get(engine, "trino")
    try:
        tree = sqlglot.parse_one(query, read=dialect)
    except SqlglotError:
        return query
    text = _text_columns(tree, database, columns)
    changed = False
    for unnest in list(tree.find_all(exp.Unnest)):
        for arg in unnest.expressions:
            if isinstance(arg, exp.Column) and arg.name.lower() in text:
                arg.replace(_parsed(arg.copy()))
                changed = True
    return tree.sql(dialect) if changed else query


def _parsed(column: exp.Column) -> exp.Expression:
    return exp.cast(
        exp.ParseJSON(this=column),
        exp.DataType.build("ARRAY<VARCHAR>"),
    )


def _text_columns(tree: exp.Expr, database: str | None, columns: Columns) -> set[str]:
    """Names of the VARCHAR columns of the lake tables the statement reads."""
    found: set[str] = set()
    for table in tree.find_all(exp.Table):
        db = (table.db or database or "").lower()
        for name, kind in columns.get(db, {}).get(table.name.lower(), {}).items():
            if kind.upper() == "VARCHAR":
                found.add(name.lower())
    return found
