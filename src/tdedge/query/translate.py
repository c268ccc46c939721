"""TD job SQL (Presto/Trino or Hive dialect) → DuckDB SQL, with TD's functions inlined.

The query is parsed once with sqlglot. Calls of TD's time functions whose arguments
are constants become plain SQL computed here from ``td_time`` (the job's scheduled
time is passed in): above all ``TD_TIME_RANGE`` and ``TD_INTERVAL`` become
``time >= a AND time < b`` with integer literals, which DuckDB pushes into the DuckLake
scan so that files whose ``time`` min/max lie outside are never read. Calls with
non-constant arguments go to the Python UDFs of query/functions.py.

Presto divides integers as integers, DuckDB does not: when the lake's columns are
known (``schema``) the query is qualified and typed so that ``a / b`` of two integers
stays an integer division. Unnamed result columns are named as Presto (``_col0``) or
Hive (``_c0``) name them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from tdedge.query import td_time
from tdedge.query.joda import PatternError, strftime_pattern
from tdedge.query.timezones import UnknownTimeZone, Zone, resolve

ENGINES = {"presto": "trino", "trino": "trino", "hive": "hive"}
LAKE_CATALOG = "lake"

# Lake columns for typing: {database: {table: {column: DuckDB type}}}.
Schema = Mapping[str, Mapping[str, Mapping[str, str]]]


class TranslationError(ValueError):
    """The query cannot run: a syntax error or a TD function used wrongly."""


@dataclass(frozen=True, slots=True)
class Context:
    scheduled: int  # TD_SCHEDULED_TIME(): the job's issue time, unix seconds
    engine: str = "presto"


class _NotConstant(Exception):
    pass


def translate(
    query: str,
    context: Context,
    database: str | None = None,
    schema: Schema | None = None,
    allowed: frozenset[str] | None = None,
) -> str:
    """DuckDB SQL for one TD query; TranslationError when it cannot be translated.

    ``allowed``: the databases the job's account may read; None for no check.
    """
    dialect = ENGINES.get(context.engine)
    if dialect is None:
        raise TranslationError(f"unknown query engine {context.engine!r}")
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except ParseError as e:
        raise TranslationError(f"syntax error: {_first_error(e)}") from None
    except SqlglotError as e:
        raise TranslationError(str(e)) from None
    if len(statements) != 1:
        raise TranslationError(f"a job runs exactly one statement, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise TranslationError("only queries (SELECT …) run as jobs here; the lake is read-only")
    if allowed is not None:
        _check_access(tree, database, allowed)
    try:
        tree = tree.transform(lambda node: _rewrite(node, context))
    except (td_time.TimeValueError, UnknownTimeZone, PatternError) as e:
        raise TranslationError(str(e)) from None
    _name_outputs(tree, "_c" if context.engine == "hive" else "_col")
    if schema is not None:
        tree = _typed(tree, dialect, database, schema)
    return tree.sql(dialect="duckdb")


def _check_access(tree: exp.Query, database: str | None, allowed: frozenset[str]) -> None:
    """Refuse tables of other accounts' databases and table functions (file readers).

    Not what keeps accounts apart — a job's connection holds only its account's share
    of the lake (lake/scope.py) — but a second line, and the clear error a user gets.
    """
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise TranslationError(f"table functions are not available: {table.sql('trino')}")
        catalog, db = table.catalog.lower(), table.db.lower()
        if catalog and catalog != LAKE_CATALOG:
            raise TranslationError(f"unknown catalog {table.catalog!r}")
        if not db:
            if table.name.lower() in ctes or database is not None:
                continue
            raise TranslationError(f"table {table.name} names no database")
        if db not in allowed:
            raise TranslationError(f"database {table.db} does not exist")


def _first_error(e: ParseError) -> str:
    if e.errors:
        first = e.errors[0]
        return f"{first.get('description')} at line {first.get('line')}, col {first.get('col')}"
    return str(e)


def _typed(
    tree: exp.Expression, dialect: str, database: str | None, schema: Schema
) -> exp.Expression:
    """Qualify and type ``tree`` so integer division survives; unchanged if that fails."""
    mapping: dict[str, object] = {
        LAKE_CATALOG: {db: {t: dict(c) for t, c in tables.items()} for db, tables in schema.items()}
    }
    try:
        qualified = qualify(
            tree.copy(),
            dialect=dialect,
            catalog=LAKE_CATALOG,
            db=database,
            schema=mapping,
            validate_qualify_columns=False,
            expand_stars=False,
            identify=False,
            quote_identifiers=False,
        )
        return annotate_types(qualified, schema=mapping, dialect=dialect)
    except (SqlglotError, KeyError, ValueError, TypeError, AttributeError):
        # Typing is an improvement, not a requirement: DuckDB resolves the names itself.
        return tree


def _name_outputs(tree: exp.Expression, prefix: str) -> None:
    """Alias the outermost SELECT's unnamed expressions as Presto/Hive would name them."""
    select = tree if isinstance(tree, exp.Select) else None
    if select is None:
        return
    for i, projection in enumerate(select.expressions):
        if isinstance(projection, exp.Alias | exp.Column | exp.Star):
            continue
        projection.replace(exp.alias_(projection.copy(), f"{prefix}{i}"))


# TD functions.
def _rewrite(node: exp.Expression, ctx: Context) -> exp.Expression:
    if not isinstance(node, exp.Anonymous):
        return node
    handler = _HANDLERS.get(str(node.this).upper())
    if handler is None:
        return node
    return handler(list(node.expressions), ctx)


def _const(e: exp.Expression | None) -> str | int | float | None:
    """The Python value of a literal argument; _NotConstant for anything else."""
    if e is None or isinstance(e, exp.Null):
        return None
    if isinstance(e, exp.Literal):
        if e.is_string:
            return str(e.this)
        text = str(e.this)
        return float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(e, exp.Neg):
        inner = _const(e.this)
        if isinstance(inner, int | float):
            return -inner
    if isinstance(e, exp.Paren):
        return _const(e.this)
    raise _NotConstant


def _const_str(e: exp.Expression | None, default: str | None = None) -> str | None:
    if e is None:
        return default
    value = _const(e)
    return None if value is None else str(value)


def _args(args: list[exp.Expression], name: str, low: int, high: int) -> None:
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise td_time.TimeValueError(f"{name} takes {want} arguments, got {len(args)}")


def fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _bigint(e: exp.Expression) -> exp.Expression:
    return exp.cast(e, exp.DataType.build("BIGINT"))


def _varchar(e: exp.Expression) -> exp.Expression:
    return exp.cast(e, exp.DataType.build("VARCHAR"))


def _num(value: int) -> exp.Expression:
    return exp.Literal.number(value) if value >= 0 else exp.Neg(this=exp.Literal.number(-value))


def _str(value: str | None) -> exp.Expression:
    return exp.Null() if value is None else exp.Literal.string(value)


def _range(t: exp.Expression, low: int | None, high: int | None) -> exp.Expression:
    """``low <= t < high`` as plain comparisons with literals: what prunes files."""
    parts: list[exp.Expression] = []
    if low is not None:
        parts.append(exp.GTE(this=t.copy(), expression=_num(low)))
    if high is not None:
        parts.append(exp.LT(this=t.copy(), expression=_num(high)))
    if not parts:
        return exp.Paren(this=exp.Not(this=exp.Is(this=t.copy(), expression=exp.Null())))
    return exp.Paren(this=exp.and_(*parts))


def local_time(t: exp.Expression, zone: Zone) -> exp.Expression:
    """The naive wall-clock TIMESTAMP of unix seconds ``t`` in ``zone``."""
    if zone.is_fixed:
        moved = t if zone.offset_s == 0 else exp.Add(this=t, expression=_num(zone.offset_s))
        return fn("timezone", exp.Literal.string("UTC"), fn("to_timestamp", moved))
    return fn("timezone", exp.Literal.string(zone.name or "UTC"), fn("to_timestamp", t))


def unix_time(local: exp.Expression, zone: Zone) -> exp.Expression:
    """Unix seconds of the naive wall-clock TIMESTAMP ``local`` in ``zone``."""
    if zone.is_fixed:
        seconds = _bigint(fn("epoch", local))
        return (
            seconds if zone.offset_s == 0 else exp.Sub(this=seconds, expression=_num(zone.offset_s))
        )
    return _bigint(fn("epoch", fn("timezone", exp.Literal.string(zone.name or "UTC"), local)))


def _time_range(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_TIME_RANGE", 2, 4)
    t, start = args[0], args[1]
    end = args[2] if len(args) > 2 else None
    tz = args[3] if len(args) > 3 else None
    try:
        zone = _const_str(tz, "UTC")
        low = td_time.time_bound(_const(start), zone)
        high = td_time.time_bound(_const(end), zone)
    except _NotConstant:
        return fn(
            "td_time_range",
            _bigint(t),
            _varchar(start),
            _varchar(end) if end is not None else exp.Null(),
            tz if tz is not None else exp.Literal.string("UTC"),
        )
    return _range(t, low, high)


def _interval(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_INTERVAL", 2, 3)
    t, spec = args[0], args[1]
    tz = args[2] if len(args) > 2 else None
    try:
        text = _const_str(spec)
        zone = _const_str(tz, "UTC")
    except _NotConstant:
        return fn(
            "td_interval",
            _bigint(t),
            _varchar(spec),
            tz if tz is not None else exp.Literal.string("UTC"),
            _num(ctx.scheduled),
        )
    if text is None:
        return exp.Null()
    low, high = td_time.interval_range(text, ctx.scheduled, zone)
    return _range(t, low, high)


def _scheduled(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_SCHEDULED_TIME", 0, 0)
    return _bigint(_num(ctx.scheduled))


def _format(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_TIME_FORMAT", 2, 3)
    t, pattern = args[0], args[1]
    tz = args[2] if len(args) > 2 else None
    try:
        text = _const_str(pattern)
        zone_name = _const_str(tz, "UTC")
    except _NotConstant:
        text, zone_name = None, None
    if text is not None:
        sql_pattern = strftime_pattern(text)
        if sql_pattern is not None:
            return fn(
                "strftime", local_time(t, resolve(zone_name)), exp.Literal.string(sql_pattern)
            )
    return fn(
        "td_time_format", t, _varchar(pattern), tz if tz is not None else exp.Literal.string("UTC")
    )


def _parse(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_TIME_PARSE", 1, 2)
    tz = args[1] if len(args) > 1 else None
    try:
        text = _const_str(args[0])
        zone = _const_str(tz, "UTC")
    except _NotConstant:
        return fn(
            "td_time_parse", _varchar(args[0]), tz if tz is not None else exp.Literal.string("UTC")
        )
    parsed = None if text is None else td_time.parse_time(text, zone)
    return exp.Null() if parsed is None else _bigint(_num(parsed))


def _add(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_TIME_ADD", 2, 3)
    t, duration = args[0], args[1]
    tz = args[2] if len(args) > 2 else None
    try:
        seconds = td_time.parse_duration(_const_str(duration) or "")
    except _NotConstant:
        return fn(
            "td_time_add",
            _varchar(t),
            _varchar(duration),
            tz if tz is not None else exp.Literal.string("UTC"),
        )
    try:
        value = _const(t)
        zone = _const_str(tz, "UTC")
    except _NotConstant:
        zone_arg = tz if tz is not None else exp.Literal.string("UTC")
        # An integer column stays a cast; a string column is parsed as a time.
        base = exp.Coalesce(
            this=exp.TryCast(this=t.copy(), to=exp.DataType.build("BIGINT")),
            expressions=[fn("td_time_parse", _varchar(t.copy()), zone_arg)],
        )
        return exp.Paren(this=exp.Add(this=base, expression=_num(seconds)))
    if value is None:
        return exp.Null()
    base_value = td_time.time_bound(value, zone)
    return exp.Null() if base_value is None else _bigint(_num(base_value + seconds))


def _trunc(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_DATE_TRUNC", 2, 3)
    unit, t = args[0], args[1]
    tz = args[2] if len(args) > 2 else None
    try:
        unit_text = _const_str(unit)
        zone_name = _const_str(tz, "UTC")
    except _NotConstant:
        return fn(
            "td_date_trunc",
            _varchar(unit),
            _bigint(t),
            tz if tz is not None else exp.Literal.string("UTC"),
        )
    if unit_text is None:
        return exp.Null()
    name = unit_text.strip().lower()
    if name not in td_time.TRUNC_UNITS:
        raise td_time.TimeValueError(f"unknown unit {unit_text!r} for TD_DATE_TRUNC")
    zone = resolve(zone_name)
    truncated = fn("date_trunc", exp.Literal.string(name), local_time(t, zone))
    return unix_time(truncated, zone)


def _time_string(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_TIME_STRING", 2, 3)
    t, code = args[0], args[1]
    tz = args[2] if len(args) > 2 else None
    try:
        code_text = _const_str(code)
        zone_name = _const_str(tz, "UTC")
    except _NotConstant:
        code_text, zone_name = None, None
    if code_text is not None and code_text.strip() in {"y!", "M!", "d!", "h!", "m!", "s!"}:
        pattern = strftime_pattern(td_time.time_string_pattern(code_text))
        assert pattern is not None
        return fn("strftime", local_time(t, resolve(zone_name)), exp.Literal.string(pattern))
    return fn(
        "td_time_string",
        _bigint(t),
        _varchar(code),
        tz if tz is not None else exp.Literal.string("UTC"),
    )


def _last(name: str) -> Callable[[list[exp.Expression], Context], exp.Expression]:
    def build(args: list[exp.Expression], ctx: Context) -> exp.Expression:
        _args(args, f"TD_{'LAST' if name == 'arg_max' else 'FIRST'}", 2, 2)
        return fn(name, args[0], args[1])

    return build


_HANDLERS: dict[str, Callable[[list[exp.Expression], Context], exp.Expression]] = {
    "TD_TIME_RANGE": _time_range,
    "TD_INTERVAL": _interval,
    "TD_SCHEDULED_TIME": _scheduled,
    "TD_TIME_FORMAT": _format,
    "TD_TIME_PARSE": _parse,
    "TD_TIME_ADD": _add,
    "TD_DATE_TRUNC": _trunc,
    "TD_TIME_STRING": _time_string,
    "TD_LAST": _last("arg_max"),
    "TD_FIRST": _last("arg_min"),
}
