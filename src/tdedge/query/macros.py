"""Presto functions whose NULLs, rounding or types DuckDB's namesakes do not share,
as DuckDB macros the translator calls (query/presto.py).

A macro names its argument once in the query text, however often its body reads it,
so nested calls stay short. Those that ask ``typeof`` of an argument get it folded to
a constant when DuckDB binds the query: only one branch is left to run.
"""

from __future__ import annotations

import duckdb

# Presto's ``substr(s, start, length)``: a start of 0, a length of 0 or less, or a
# negative start before the beginning give ''; a negative start counts from the end.
# DuckDB's substring reads a start of 0 or before the beginning as 1, and a negative
# length as characters before the start.
_SUBSTR = (
    "CREATE OR REPLACE TEMP MACRO presto_substr(s, b, n) AS CASE "
    "WHEN s IS NULL OR b IS NULL OR n IS NULL THEN NULL "
    "WHEN b = 0 OR n <= 0 OR b + length(s) < 0 THEN '' "
    "ELSE substring(s, b, n) END"
)
_SUBSTR_FROM = (
    "CREATE OR REPLACE TEMP MACRO presto_substr_from(s, b) AS CASE "
    "WHEN s IS NULL OR b IS NULL THEN NULL "
    "WHEN b = 0 OR b + length(s) < 0 THEN '' "
    "ELSE substring(s, b) END"
)

# A double or a real cast to an integer type rounds half away from zero in Presto
# (2.5 → 3, -2.5 → -3), half to even in DuckDB (2). DuckDB's round() of a double
# rounds away from zero: rounded first, the cast has nothing left to round. Other
# types pass through unchanged (a decimal already rounds so, a string is checked by
# the caller).
_ROUND_HALF_UP = (
    "CREATE OR REPLACE TEMP MACRO presto_round_half_up(x) AS CASE "
    "WHEN typeof(x) IN ('DOUBLE', 'FLOAT') "
    "THEN cast_to_type(round(TRY_CAST(x AS DOUBLE)), x) ELSE x END"
)

# array_max / array_min are NULL when an element is NULL (DuckDB skips NULLs).
_ARRAY_EXTREME = (
    "CREATE OR REPLACE TEMP MACRO presto_array_{name}(a) AS CASE "
    "WHEN list_position(a, NULL) IS NOT NULL THEN NULL ELSE list_{name}(a) END"
)

# contains(array, x): true when found; NULL when not found but the array holds a NULL
# (the NULL might have been x); false otherwise.
_CONTAINS = (
    "CREATE OR REPLACE TEMP MACRO presto_contains(a, x) AS CASE "
    "WHEN list_contains(a, x) THEN true "
    "WHEN list_position(a, NULL) IS NOT NULL THEN NULL "
    "ELSE list_contains(a, x) END"
)

# sign(x) has x's type in Presto (sign(-2.0) is the decimal -1.0, sign(-2e0) the
# double -1.0, NaN for NaN); DuckDB's is always a TINYINT.
_SIGN = (
    "CREATE OR REPLACE TEMP MACRO presto_sign(x) AS CASE "
    "WHEN typeof(x) IN ('DOUBLE', 'FLOAT') AND isnan(TRY_CAST(x AS DOUBLE)) THEN x "
    "ELSE cast_to_type(sign(x), x) END"
)

# cosine_similarity of two sparse vectors (maps of a name to its coordinate): over
# the keys of the first, as a key missing from either map is a zero coordinate.
_MAP_COSINE = (
    "CREATE OR REPLACE TEMP MACRO presto_map_cosine_similarity(x, y) AS "
    "list_sum(list_transform(map_keys(x), k -> "
    "CAST(map_extract_value(x, k) AS DOUBLE) "
    "* coalesce(CAST(map_extract_value(y, k) AS DOUBLE), 0))) "
    "/ (sqrt(list_sum(list_transform(map_values(x), v -> CAST(v AS DOUBLE) * v))) "
    "* sqrt(list_sum(list_transform(map_values(y), v -> CAST(v AS DOUBLE) * v))))"
)

MACROS = (
    _SUBSTR,
    _SUBSTR_FROM,
    _ROUND_HALF_UP,
    _ARRAY_EXTREME.format(name="max"),
    _ARRAY_EXTREME.format(name="min"),
    _CONTAINS,
    _SIGN,
    _MAP_COSINE,
)


def define(con: duckdb.DuckDBPyConnection) -> None:
    """Create the macros on ``con`` (once per connection)."""
    for statement in MACROS:
        con.execute(statement)
