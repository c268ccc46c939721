"""Presto's ``a / b`` as DuckDB macros, whose answer follows the operands' types.

Presto divides two integers as integers (truncating), a decimal by a decimal or an
integer as a decimal rounded half up to the larger scale of the two (``1.0 / 3`` is
``0.3``), and anything with a double as doubles (``1e0 / 0`` is Infinity). Integer and
decimal division by zero fail with "Division by zero". DuckDB's ``/`` makes a double of
all of these and its ``//`` gives NULL for a zero divisor.

The translator cannot tell the types apart (a column's type is known once DuckDB binds
the query), so ``a / b`` becomes ``presto_divide(a, b)`` (``presto_try_divide`` inside
``try()``, where a zero divisor gives NULL: DuckDB's TRY refuses ``error``). The macro
asks ``typeof`` of its operands, which DuckDB folds to a constant when it binds, so
only one branch is left to run. Each branch is cast to the type of
``a + b + 0::BIGINT``: DOUBLE (or REAL) with a double, a DECIMAL of the larger scale
with a decimal, an integer type otherwise, so no branch widens another's type.

The decimal quotient is computed exactly, in Python, from the operands' text (a
decimal's text has all its scale's digits) and cast to that DECIMAL type: a quotient
with more digits than the type holds fails the query with DuckDB's cast error rather
than giving another number. It is per row, so slower than the native divisions.

A macro's parameter is copied wherever its body names it, so the body names each
operand as few times as it can: nested divisions multiply the copies.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal

import duckdb
from duckdb import sqltypes

# Enough digits for any quotient of two DECIMAL(38) values before rounding.
_EXACT = decimal.Context(prec=120, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation])


def decimal_quotient(dividend: str | None, divisor: str | None) -> str | None:
    """``dividend / divisor`` rounded half up to the larger of their scales (Presto's
    decimal division); NULL for a zero divisor (the macro fails or not before)."""
    if dividend is None or divisor is None:
        return None
    a, b = Decimal(dividend), Decimal(divisor)
    if b == 0:
        return None
    scale = max(-int(a.as_tuple().exponent), -int(b.as_tuple().exponent), 0)
    quotient = _EXACT.divide(a, b).quantize(Decimal(1).scaleb(-scale), context=_EXACT)
    return format(quotient, "f")


def _divide(name: str, zero: str) -> str:
    """The macro ``name(a, b)``; ``zero`` is what an integer or decimal divisor 0 gives."""
    kinds = "typeof(a) || ' ' || typeof(b)"
    result = "a + b + CAST(0 AS BIGINT)"
    checked = f"CASE WHEN b = 0 THEN {zero} ELSE b END"
    quotient = f"td_decimal_quotient(CAST(a AS VARCHAR), CAST({checked} AS VARCHAR))"
    return (
        f"CREATE OR REPLACE TEMP MACRO {name}(a, b) AS CASE "
        f"WHEN regexp_matches({kinds}, '\\b(DOUBLE|FLOAT)\\b') "
        f"THEN cast_to_type(a / b, {result}) "
        f"WHEN contains({kinds}, 'DECIMAL') THEN cast_to_type({quotient}, {result}) "
        f"ELSE cast_to_type(a // {checked}, {result}) END"
    )


MACROS = (
    _divide("presto_divide", "error('Division by zero')"),
    _divide("presto_try_divide", "NULL"),
)


def define(con: duckdb.DuckDBPyConnection) -> None:
    """Create the division function and macros on ``con`` (once per connection)."""
    con.create_function(
        "td_decimal_quotient",
        decimal_quotient,
        [sqltypes.VARCHAR, sqltypes.VARCHAR],
        sqltypes.VARCHAR,
        side_effects=False,
    )
    for statement in MACROS:
        con.execute(statement)
