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
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, UnsupportedError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from tdedge.query import presto, td_time, unions, zoned
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
        _sessionize(tree)
        out = _rewrite_all(tree, context)
        _name_outputs(out, "_c" if context.engine == "hive" else "_col")
        _print_zoned(out)
    except (
        td_time.TimeValueError,
        UnknownTimeZone,
        PatternError,
        presto.Unsupported,
        zoned.ZoneNotKept,
    ) as e:
        raise TranslationError(str(e)) from None
    if schema is not None:
        out = _typed(out, dialect, database, schema)
    try:
        # What sqlglot cannot say in DuckDB it would otherwise drop with a warning
        # (a comparator, an output function): a different answer. It fails instead.
        return out.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as e:
        raise TranslationError(f"not supported: {e}") from None


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


def _typed(tree: exp.Expr, dialect: str, database: str | None, schema: Schema) -> exp.Expr:
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


def _name_outputs(tree: exp.Expr, prefix: str) -> None:
    """Alias the outermost SELECT's unnamed expressions as Presto/Hive would name them."""
    select = tree if isinstance(tree, exp.Select) else None
    if select is None:
        return
    for i, projection in enumerate(select.expressions):
        if isinstance(projection, exp.Alias | exp.Column | exp.Star):
            continue
        projection.replace(exp.alias_(projection.copy(), f"{prefix}{i}"))


def _print_zoned(tree: exp.Expr) -> None:
    """The outermost SELECT's zoned timestamps, printed as Presto prints them."""
    if isinstance(tree, exp.SetOperation):
        unions.print_zoned(tree)
        return
    if not isinstance(tree, exp.Select):
        return
    for projection in tree.expressions:
        value = projection.this if isinstance(projection, exp.Alias) else projection
        zone_label = zoned.zone_of(value)
        if zone_label == zoned.ROW_OFFSET:
            # In UTC where every row's offset is zero: a TIMESTAMPTZ, as below.
            checked = zoned.in_utc(value.copy())
            if isinstance(projection, exp.Alias):
                projection.set("this", checked)
            else:
                projection.replace(exp.alias_(checked, projection.alias_or_name))
            continue
        if zone_label is None or zone_label == "UTC":
            continue  # a TIMESTAMPTZ in UTC prints as Presto's already, and keeps its type
        if isinstance(projection, exp.Alias):
            projection.set("this", zoned.as_text(value, zone_label))
        elif isinstance(projection, exp.Column):
            text = zoned.as_text(projection.copy(), zone_label)
            projection.replace(exp.alias_(text, projection.name))


def _sessionize(tree: exp.Expr) -> None:
    """``TD_SESSIONIZE_WINDOW(time, timeout) OVER (PARTITION BY k ORDER BY time)``.

    A session starts where the gap to the previous row of the partition exceeds
    ``timeout`` seconds. That needs a window over a window (the running count of
    starts), so the SELECT's table is wrapped in a subquery that marks the starts; the
    session id is a UUID derived from the partition and the session's number.
    """
    for n, window in enumerate(list(tree.find_all(exp.Window))):
        call = window.this
        if isinstance(call, exp.Anonymous) and str(call.this).upper() == "TD_SESSIONIZE_WINDOW":
            _sessionize_window(window, list(call.expressions), f"__td_session_start{n}")


def _over(this: exp.Expression, window: exp.Window, running: bool) -> exp.Window:
    spec = (
        exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")
        if running
        else None
    )
    order = window.args.get("order")
    return exp.Window(
        this=this,
        partition_by=[p.copy() for p in window.args.get("partition_by") or []],
        order=order.copy() if order is not None else None,
        spec=spec,
    )


def _sessionize_window(window: exp.Window, args: list[exp.Expression], flag: str) -> None:
    _args(args, "TD_SESSIONIZE_WINDOW", 2, 2)
    select = window.find_ancestor(exp.Select)
    source = select.args.get("from_") if select is not None else None
    if select is None or source is None or select.args.get("joins"):
        raise td_time.TimeValueError(
            "TD_SESSIONIZE_WINDOW is supported in a SELECT from one table or subquery "
            "(join in a subquery first)"
        )
    time_expr, timeout = args
    previous = _over(fn("lag", time_expr.copy()), window, running=False)
    gap = exp.Sub(this=time_expr.copy(), expression=previous.copy())
    starts = exp.Case(
        ifs=[
            exp.If(
                this=exp.or_(
                    exp.Is(this=previous.copy(), expression=exp.Null()),
                    exp.GT(this=gap, expression=timeout.copy()),
                ),
                true=exp.Literal.number(1),
            )
        ],
        default=exp.Literal.number(0),
    )
    table = source.this
    inner = exp.select(exp.Star(), exp.alias_(starts, flag)).from_(table.copy())
    alias = exp.TableAlias(this=exp.to_identifier(table.alias_or_name))
    source.set("this", exp.Subquery(this=inner, alias=alias))
    # The helper column stays out of the query's own stars.
    for star in select.expressions:
        inner_star = star.this if isinstance(star, exp.Column) else star
        if isinstance(inner_star, exp.Star):
            inner_star.set("except_", [*(inner_star.args.get("except_") or []), exp.column(flag)])
    number = _over(fn("sum", exp.column(flag)), window, running=True)
    parts = [
        fn("coalesce", _varchar(p.copy()), exp.Literal.string("\\N"))
        for p in window.args.get("partition_by") or []
    ]
    key = fn("concat_ws", fn("chr", exp.Literal.number(1)), *parts, _varchar(number))
    window.replace(_varchar(exp.cast(fn("md5", key), exp.DataType.build("UUID"))))


def _rewrite_all(tree: exp.Expr, ctx: Context) -> exp.Expr:
    """Every node rewritten after its arguments (TD functions nest inside each other)."""
    sources: dict[str, str] = {}  # "alias.column" and "column" → zone, from subqueries
    root = tree
    for node in _post_order(tree):
        # Where the node sits, taken first: a rewrite may wrap the node in its result.
        parent, key, index = node.parent, node.arg_key, node.index
        new = _rewrite(node, ctx) if isinstance(node, exp.Expression) else node
        if isinstance(new, exp.Subquery | exp.CTE):
            _remember_zones(new, sources)
        elif isinstance(new, exp.Column) and not zoned.zone_of(new):
            key = f"{new.table.lower()}.{new.name.lower()}" if new.table else new.name.lower()
            zoned.tag(new, sources.get(key))
        if new is not node:
            if parent is None or key is None:
                root = new
            else:
                parent.set(key, new, index)
    return root


# A query's sources are rewritten before what reads them (its WHERE, its SELECT), so
# the zones of their columns are known there.
_SOURCES_FIRST = {"with_": 0, "from_": 1, "joins": 2, "laterals": 3}


def _post_order(tree: exp.Expr) -> list[exp.Expr]:
    order: list[exp.Expr] = []
    stack: list[tuple[exp.Expr, bool]] = [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        stack.append((node, True))
        children = sorted(
            node.iter_expressions(), key=lambda c: _SOURCES_FIRST.get(c.arg_key or "", 9)
        )
        stack.extend((child, False) for child in reversed(children))
    return order


def _remember_zones(source: exp.Subquery | exp.CTE, zones: dict[str, str]) -> None:
    query = source.this
    alias = source.alias_or_name.lower()
    if isinstance(query, exp.SetOperation):
        for column, column_zone in unions.column_zones(query):
            zones[f"{alias}.{column}"] = column_zone
            zones[column] = column_zone
        return
    if not isinstance(query, exp.Select):
        return
    for projection in query.expressions:
        zone_label = zoned.zone_of(projection)
        if zone_label == zoned.ROW_OFFSET and isinstance(projection, exp.Alias):
            # Read in UTC where it is made: what reads the column has no text to check.
            projection.set("this", zoned.in_utc(projection.this))
            zone_label = "UTC"
        if zone_label is not None and projection.alias_or_name:
            name = projection.alias_or_name.lower()
            zones[f"{alias}.{name}"] = zone_label
            zones[name] = zone_label


# TD functions.
def _rewrite(node: exp.Expression, ctx: Context) -> exp.Expression:
    handler = _HANDLERS.get(str(node.this).upper()) if isinstance(node, exp.Anonymous) else None
    if handler is not None:
        return handler(list(node.expressions), ctx)
    if isinstance(node, exp.Anonymous) and str(node.this).upper().startswith("TD_"):
        raise td_time.TimeValueError(_unknown_td(str(node.this).upper()))
    # Presto's rules (integer division, slice's length…) are not Hive's.
    return node if ctx.engine == "hive" else presto.rewrite(node)


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
    if isinstance(e, exp.Cast) and e.to.is_type("bigint", "varchar", "int"):
        # What a nested TD function folded to (TD_TIME_ADD(TD_SCHEDULED_TIME(), '-1d')).
        inner = _const(e.this)
        if e.to.is_type("varchar"):
            return None if inner is None else str(inner)
        if inner is None or isinstance(inner, int):
            return inner
    raise _NotConstant
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


def _udf(name: str, low: int, high: int, sql_name: str | None = None) -> Handler:
    """A TD UDF computed by the Python function of the same name (query/functions.py)."""

    def build(args: list[exp.Expression], ctx: Context) -> exp.Expression:
        _args(args, name, low, high)
        return fn(sql_name or name.lower(), *args)

    return build


def _parse_user_agent(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_PARSE_USER_AGENT", 1, 2)
    if len(args) == 2:
        return fn("td_parse_user_agent_field", _varchar(args[0]), _varchar(args[1]))
    return fn("td_parse_user_agent", _varchar(args[0]))


def _url_decode(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    # Native: '+' is a space in a query string, %2B a plus, so '+' goes first. Bytes
    # that are not UTF-8 make the value NULL rather than fail the query.
    _args(args, "TD_URL_DECODE", 1, 1)
    plus = fn("replace", _varchar(args[0]), exp.Literal.string("+"), exp.Literal.string(" "))
    return exp.Try(this=fn("url_decode", plus))


def _md5(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    _args(args, "TD_MD5", 1, 1)
    return fn("md5", _varchar(args[0]))


def _sessionize_alone(args: list[exp.Expression], ctx: Context) -> exp.Expression:
    raise td_time.TimeValueError(
        "TD_SESSIONIZE_WINDOW is a window function: "
        "TD_SESSIONIZE_WINDOW(time, timeout) OVER (PARTITION BY … ORDER BY time)"
    )


def _refused(reason: str) -> Handler:
    def build(args: list[exp.Expression], ctx: Context) -> exp.Expression:
        raise td_time.TimeValueError(reason)

    return build


def _unknown_td(name: str) -> str:
    return f"{name} is not a Treasure Data function tdedge knows (see docs/presto.md)"


Handler = Callable[[list[exp.Expression], Context], exp.Expression]

_IP_FIELDS = (
    "COUNTRY_CODE",
    "COUNTRY_NAME",
    "CITY_NAME",
    "SUBDIVISION_NAMES",
    "MOST_SPECIFIC_SUBDIVISION_NAME",
    "LEAST_SPECIFIC_SUBDIVISION_NAME",
    "LATITUDE",
    "LONGITUDE",
    "METRO_CODE",
    "TIME_ZONE",
    "POSTAL_CODE",
)

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
    "TD_SESSIONIZE_WINDOW": _sessionize_alone,
    "TD_PARSE_USER_AGENT": _parse_user_agent,
    "TD_PARSE_AGENT": _udf("TD_PARSE_AGENT", 1, 1),
    "TD_URL_DECODE": _url_decode,
    "TD_MD5": _md5,
    "TD_SUBSTRING_INENCODING": _udf("TD_SUBSTRING_INENCODING", 3, 3),
    **{f"TD_IP_TO_{field}": _udf(f"TD_IP_TO_{field}", 1, 1) for field in _IP_FIELDS},
    "TD_IP_TO_CONNECTION_TYPE": _refused(
        "TD_IP_TO_CONNECTION_TYPE needs MaxMind's commercial Connection-Type database, "
        "which tdedge does not read"
    ),
    "TD_IP_TO_DOMAIN": _refused(
        "TD_IP_TO_DOMAIN needs MaxMind's commercial Domain database, which tdedge does not read"
    ),
    "TD_LAT_LONG_TO_COUNTRY": _refused(
        "TD_LAT_LONG_TO_COUNTRY needs country borders, which tdedge does not ship"
    ),
    "TD_CURRENCY_CONV": _refused(
        "TD_CURRENCY_CONV needs TD's exchange-rate table, which tdedge does not have"
    ),
    "TD_SESSIONIZE": _refused(
        "TD_SESSIONIZE is deprecated in Presto: use "
        "TD_SESSIONIZE_WINDOW(time, timeout) OVER (PARTITION BY … ORDER BY time)"
    ),
}
