"""Presto/Trino functions whose DuckDB spelling gives a different answer, made right.

sqlglot turns most Presto calls into their DuckDB equivalents by itself. What is here
are the rules it misses — where the DuckDB function of the same name means something
else (``date_diff`` counts boundaries, ``slice`` takes an end, ``regexp_replace``
writes groups as ``\\1``, a string cast to an integer rounds) — and the functions it
leaves untranslated. ``rewrite`` sees each node after its arguments were rewritten
(bottom-up), so zones (query/zoned.py) flow from ``from_unixtime`` to whatever uses it.

A function that cannot be given Presto's meaning raises ``Unsupported`` naming it:
a query that fails is better than one that answers differently.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from tdedge.query import zoned
from tdedge.query.joda import PatternError, strftime_pattern
from tdedge.query.regex_groups import Group, group_kind


class Unsupported(ValueError):
    """A Presto function or form with no faithful translation here."""


def fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _s(text: str) -> exp.Expression:
    return exp.Literal.string(text)


def _literal_text(node: exp.Expression | None) -> str | None:
    if isinstance(node, exp.Literal) and node.is_string:
        return str(node.this)
    return None


_INTEGER_TYPES = frozenset(
    {
        exp.DataType.Type.TINYINT,
        exp.DataType.Type.SMALLINT,
        exp.DataType.Type.INT,
        exp.DataType.Type.BIGINT,
    }
)
_TEXT_TYPES = frozenset({exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR, exp.DataType.Type.TEXT})
# What Presto accepts as an integer in a string: digits with an optional sign.
_INTEGER_TEXT = r"\s*[+-]?[0-9]+\s*"


_TIMESTAMP_TEXT = re.compile(
    r"\s*(\d{4}-\d{2}-\d{2})(?:[ T](\d{1,2}:\d{2})(:\d{2}(?:\.\d+)?)?)?"
    r"\s*([A-Za-z][\w/+-]*|[+-]\d{2}:\d{2})?\s*"
)


def _timestamp_literal(node: exp.Cast) -> exp.Expression | None:
    """``TIMESTAMP '2012-10-31 01:00 Asia/Tokyo'``: seconds optional, a zone allowed."""
    text = _literal_text(node.this)
    m = _TIMESTAMP_TEXT.fullmatch(text or "")
    if m is None:
        return None
    day, hm, seconds, zone_name = m.groups()
    local = f"{day} {hm or '00:00'}{seconds or ':00'}"
    naive = exp.cast(_s(local), exp.DataType.build("TIMESTAMP"))
    if zone_name is None:
        if node.to.this == exp.DataType.Type.TIMESTAMP:
            return naive
        return zoned.tag(exp.cast(naive, exp.DataType.build("TIMESTAMPTZ")), "UTC")
    return zoned.from_local(naive, zoned.label(zone_name))


_DECIMAL_TEXT = re.compile(r"\s*[+-]?(\d*)(?:\.(\d*))?\s*")


def _decimal_literal(value: exp.Expression) -> exp.Expression | None:
    """``DECIMAL '1.50'`` is DECIMAL(3, 2) in Trino: as many digits as written (DuckDB
    would make every one DECIMAL(18, 3))."""
    m = _DECIMAL_TEXT.fullmatch(_literal_text(value) or "")
    if m is None or not (m.group(1) or m.group(2)):
        return None
    whole, fraction = m.group(1) or "", m.group(2) or ""
    scale = len(fraction)
    precision = max(len(whole) + scale, 1)
    if precision > 38:
        return None
    return exp.cast(value, exp.DataType.build(f"DECIMAL({precision}, {scale})"))


def _json_text(value: exp.Expression, safe: bool) -> exp.Expression:
    """``CAST(json AS VARCHAR)``: a JSON scalar's value (a string without its quotes);
    an array or object cannot be cast (NULL under TRY_CAST)."""
    kind = fn("json_type", value.copy())
    scalar = fn("json_extract_string", value.copy(), _s("$"))
    refused: exp.Expression = (
        exp.Null() if safe else fn("error", _s("Cannot cast JSON array or object to VARCHAR"))
    )
    return exp.Case(
        ifs=[exp.If(this=exp.In(this=kind, expressions=[_s("ARRAY"), _s("OBJECT")]), true=refused)],
        default=scalar,
    )


_JSON = "json"  # meta key: the node is a JSON value (what json_extract became)


def _is_json(node: exp.Expression) -> bool:
    if isinstance(node, exp.ParseJSON | exp.JSONExtract) or node.meta.get(_JSON):
        return True
    return isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.JSON


def _cast(node: exp.Cast) -> exp.Expression:
    """Casts whose answer depends on a zone, and strings cast to integers."""
    target = node.to
    value = node.this
    safe = isinstance(node, exp.TryCast) or node.find_ancestor(exp.Try) is not None
    if target.this in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
        literal = _timestamp_literal(node) if _literal_text(value) is not None else None
        if literal is not None:
            return literal
    if target.this == exp.DataType.Type.DECIMAL and not target.expressions:
        literal = _decimal_literal(value)
        if literal is not None:
            return literal
    if target.this == exp.DataType.Type.JSON and not _is_json(value):
        # Presto makes a JSON value of the SQL value ('abc' becomes "abc"); DuckDB
        # would parse the string.
        return fn("to_json", value)
    if target.this in _TEXT_TYPES and _is_json(value):
        return _json_text(value, safe)
    zone_label = zoned.zone_of(value)
    if zone_label is not None:
        if target.this in _TEXT_TYPES:
            return zoned.as_text(value, zone_label)
        if target.this in (exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP):
            node.set("this", zoned.to_local(value, zone_label))
            return node
        if target.this == exp.DataType.Type.TIMESTAMPTZ:
            return zoned.tag(value, zone_label)
        return node
    if target.this in _INTEGER_TYPES and _may_be_double(value):
        # Presto rounds a double half away from zero (2.5 → 3), DuckDB half to even.
        number = _is_number(value)
        value = fn("presto_round_half_up", value)
        node.set("this", value)
        if number:
            return node
    if target.this in _INTEGER_TYPES and not _is_number(value):
        # DuckDB rounds '4.5' to 5; Presto refuses a string that is not an integer
        # (NULL under TRY_CAST). Only strings are checked: a double still rounds.
        text = exp.cast(value.copy(), exp.DataType.build("VARCHAR"))
        is_text = exp.EQ(this=fn("typeof", value.copy()), expression=_s("VARCHAR"))
        ok = exp.or_(exp.Not(this=is_text), fn("regexp_full_match", text, _s(_INTEGER_TEXT)))
        cast = exp.TryCast(this=value.copy(), to=target.copy()) if safe else node
        if safe:
            node = exp.TryCast(this=value.copy(), to=target.copy())
        if safe:
            return exp.Case(ifs=[exp.If(this=ok, true=cast)])
        message = exp.DPipe(
            this=exp.DPipe(this=_s("Cannot cast '"), expression=text.copy(), safe=True),
            expression=_s(f"' to {target.sql('trino').upper()}"),
            safe=True,
        )
        return exp.Case(ifs=[exp.If(this=ok, true=cast.copy())], default=fn("error", message))
    return node


def _may_be_double(node: exp.Expression) -> bool:
    """Whether ``node`` may be a double or a real: not a string, an integer or a
    decimal literal, nor a bare NULL (whose type DuckDB cannot cast to)."""
    inner = node.this if isinstance(node, exp.Neg) else node
    if isinstance(inner, exp.Null):
        return False
    if isinstance(inner, exp.Literal):
        return not inner.is_string and any(c in str(inner.this) for c in "eE")
    return True


def _is_number(node: exp.Expression) -> bool:
    inner = node.this if isinstance(node, exp.Neg) else node
    return isinstance(inner, exp.Literal) and not inner.is_string


def _unix_to_time(node: exp.UnixToTime) -> exp.Expression:
    if node.args.get("hours") is not None or node.args.get("minutes") is not None:
        raise Unsupported("from_unixtime(t, hours, minutes) is not supported; give a zone name")
    if node.args.get("scale") is not None or node.args.get("format") is not None:
        return node
    seconds = node.this
    zone_arg = node.args.get("zone")
    instant = fn("to_timestamp", seconds)
    if zone_arg is None:
        return zoned.tag(instant, "UTC")
    name = _literal_text(zone_arg)
    if name is None:
        raise Unsupported("from_unixtime with a zone that is not a constant")
    return zoned.tag(instant, zoned.label(name))


def _at_zone(value: exp.Expression, zone_arg: exp.Expression | None, what: str) -> exp.Expression:
    name = _literal_text(zone_arg)
    if name is None:
        raise Unsupported(f"{what} with a zone that is not a constant")
    instant = value if zoned.zone_of(value) else exp.cast(value, exp.DataType.build("TIMESTAMPTZ"))
    return zoned.tag(instant.copy(), zoned.label(name))


def _with_timezone(args: list[exp.Expression]) -> exp.Expression:
    """``with_timezone(timestamp, zone)``: the wall-clock time read in ``zone``."""
    name = _literal_text(args[1]) if len(args) == 2 else None
    if name is None:
        raise Unsupported("with_timezone takes a timestamp and a constant zone")
    return zoned.from_local(exp.cast(args[0], exp.DataType.build("TIMESTAMP")), zoned.label(name))


def _trunc(node: exp.Expression) -> exp.Expression:
    zone_label = zoned.zone_of(node.this)
    if zone_label is None:
        return node
    node.set("this", zoned.to_local(node.this, zone_label))
    return zoned.from_local(node, zone_label)


def _date_add(node: exp.Expression) -> exp.Expression:
    zone_label = zoned.zone_of(node.this)
    if zone_label is None:
        if _is_date(node.this):
            # DuckDB's date + interval is a timestamp; Presto's stays a date.
            return exp.cast(node, exp.DataType.build("DATE"))
        return node
    node.set("this", zoned.to_local(node.this, zone_label))
    return zoned.from_local(node, zone_label)


def _is_date(node: exp.Expression) -> bool:
    if isinstance(node, exp.Cast | exp.TryCast):
        return bool(node.to.this == exp.DataType.Type.DATE)
    return isinstance(node, exp.CurrentDate | exp.Date | exp.TsOrDsToDate | exp.StrToDate)


def _local_args(node: exp.Expression) -> exp.Expression:
    """A calendar question (year, hour, formatting…): asked of the wall-clock time."""
    for key in ("this", "expression"):
        child = node.args.get(key)
        if isinstance(child, exp.Expression) and zoned.zone_of(child):
            node.set(key, zoned.local_of(child))
    return node


def _date_diff(node: exp.DateDiff) -> exp.Expression:
    """Presto counts whole units between the two (DuckDB's date_sub), not boundaries."""
    unit = node.args.get("unit")
    unit_text = unit.name.lower() if isinstance(unit, exp.Expression) else "day"
    start = zoned.local_of(node.expression)
    end = zoned.local_of(node.this)
    return fn("date_sub", _s(unit_text), start, end)


def _slice(node: exp.ArraySlice) -> exp.Expression:
    """``slice(a, start, length)``; a negative start counts from the end."""
    array, start, length = node.this, node.args.get("start"), node.args.get("end")
    if start is None or length is None:
        return node
    first = exp.Case(
        ifs=[
            exp.If(
                this=exp.LT(this=start.copy(), expression=exp.Literal.number(0)),
                true=exp.Add(
                    this=exp.Add(this=fn("len", array.copy()), expression=start.copy()),
                    expression=exp.Literal.number(1),
                ),
            )
        ],
        default=start.copy(),
    )
    checked = exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(this=start.copy(), expression=exp.Literal.number(0)),
                true=fn("error", _s("SQL array indices start at 1")),
            ),
            exp.If(
                this=exp.LT(this=length.copy(), expression=exp.Literal.number(0)),
                true=fn("error", _s("length must be greater than or equal to 0")),
            ),
        ],
        default=first,
    )
    last = exp.Sub(
        this=exp.Add(this=exp.Paren(this=checked.copy()), expression=length.copy()),
        expression=exp.Literal.number(1),
    )
    return fn("list_slice", array, exp.Paren(this=checked), last)


_GROUP = re.compile(r"\$(\d+)|\$\{(\w+)\}|\\(.)|(\\)$|(\$)", re.S)


def java_replacement(text: str, pattern: str | None) -> str:
    """A Java ``Matcher`` replacement (``$1``, ``${name}``, ``\\$``) in RE2's syntax."""
    names = _group_names(pattern or "")
    out: list[str] = []
    pos = 0
    for m in _GROUP.finditer(text):
        out.append(_re2_literal(text[pos : m.start()]))
        pos = m.end()
        number, name, escaped, trailing, lone = m.groups()
        if number is not None:
            out.append("\\" + number)
        elif name is not None:
            if name not in names:
                raise Unsupported(f"regexp_replace: no group named {name!r} in the pattern")
            out.append("\\" + str(names[name]))
        elif escaped is not None:
            out.append(_re2_literal(escaped))
        elif trailing is not None:
            raise Unsupported("regexp_replace: the replacement ends with a lone backslash")
        elif lone is not None:
            raise Unsupported("regexp_replace: illegal group reference '$' in the replacement")
    out.append(_re2_literal(text[pos:]))
    return "".join(out)


def _re2_literal(text: str) -> str:
    return text.replace("\\", "\\\\")


def _group_names(pattern: str) -> dict[str, int]:
    names: dict[str, int] = {}
    count = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            rest = pattern[i + 1 : i + 4]
            if not rest.startswith("?"):
                count += 1
            elif rest.startswith("?<") and rest[2:3] not in ("=", "!"):
                count += 1
                end = pattern.find(">", i)
                names[pattern[i + 3 : end]] = count
            elif rest.startswith("?P<"):
                count += 1
                end = pattern.find(">", i)
                names[pattern[i + 4 : end]] = count
        i += 1
    return names


_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z])")


def _regexp(node: exp.Expression) -> exp.Expression:
    """Java's named groups ``(?<name>…)`` in RE2's spelling ``(?P<name>…)``."""
    pattern = node.args.get("expression")
    text = _literal_text(pattern)
    if text is not None and _NAMED_GROUP.search(text):
        node.set("expression", _s(_NAMED_GROUP.sub("(?P<", text)))
    if isinstance(node, exp.RegexpReplace):
        return _regexp_replace(node)
    if isinstance(node, exp.RegexpExtract):
        # No match is NULL in Presto ('' in DuckDB).
        found = fn("regexp_matches", node.this.copy(), node.expression.copy())
        return exp.Case(ifs=[exp.If(this=found, true=_absent_group(node, node.copy()))])
    if isinstance(node, exp.RegexpExtractAll):
        kind = _group_kind(node)
        if kind is Group.ALWAYS:
            return node
        each = _absent_group(node, exp.column("__g"))
        return fn("list_transform", node, exp.Lambda(this=each, expressions=[_ident("__g")]))
    return node


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name)


def _group_kind(node: exp.Expression) -> Group:
    group = node.args.get("group")
    number = 0 if group is None else _int_literal(group)
    pattern = _literal_text(node.args.get("expression"))
    if number is None or pattern is None:
        return Group.AMBIGUOUS
    return group_kind(pattern, number)


def _int_literal(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    return None


def _absent_group(node: exp.Expression, value: exp.Expression) -> exp.Expression:
    """``value`` (one group's text) with Presto's NULL for a group that took no part in
    the match, where DuckDB gives '' (query/regex_groups.py); where '' could be either,
    an error rather than a guess."""
    kind = _group_kind(node)
    if kind is Group.ALWAYS:
        return value
    if kind is Group.NONEMPTY:
        return exp.Nullif(this=value, expression=_s(""))
    ambiguous = fn(
        "error",
        _s(
            "regexp: a group that may take no part in the match and may match the empty "
            "string matched nothing; tdedge cannot tell NULL from '' there (make the "
            "group non-optional or unable to match the empty string)"
        ),
    )
    empty = exp.EQ(this=value.copy(), expression=_s(""))
    return exp.Case(ifs=[exp.If(this=empty, true=ambiguous)], default=value)


def _approx_quantile(node: exp.ApproxQuantile) -> exp.Expression:
    # With an array of percentiles the answer is an array: sqlglot would cast it to
    # a double, so the call is passed through as it is.
    quantile = node.args.get("quantile")
    if isinstance(quantile, exp.Array) and not node.args.get("weight"):
        return fn("approx_quantile", node.this, quantile)
    return node


def _regexp_replace(node: exp.RegexpReplace) -> exp.Expression:
    replacement = node.args.get("replacement")
    if replacement is None:
        return node
    if isinstance(replacement, exp.Lambda):
        raise Unsupported("regexp_replace with a lambda is not supported")
    text = _literal_text(replacement)
    if text is None:
        raise Unsupported("regexp_replace with a replacement that is not a constant")
    node.set("replacement", _s(java_replacement(text, _literal_text(node.expression))))
    return node


def _format_datetime(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise Unsupported("format_datetime takes a timestamp and a pattern")
    value, pattern = args
    text = _literal_text(pattern)
    zone_label = zoned.zone_of(value) or "UTC"
    if text is not None:
        try:
            sql_pattern = strftime_pattern(text)
        except PatternError as e:
            raise Unsupported(f"format_datetime: {e}") from None
        if sql_pattern is not None:
            return fn("strftime", zoned.to_local(value, zone_label), _s(sql_pattern))
    seconds = fn("epoch", exp.cast(value, exp.DataType.build("TIMESTAMPTZ")))
    return fn(
        "td_time_format", seconds, exp.cast(pattern, exp.DataType.build("VARCHAR")), _s(zone_label)
    )


# RFC 3986's regular expression for the parts of a URI (its appendix B).
_URI = r"^(([^:/?#]+):)?(//([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?$"
# java.net.URI refuses these anywhere (and a second '#'): Presto's url functions give NULL.
_URI_ILLEGAL = r'[\x00-\x20"<>\\^`{|}\x7f]|#.*#'
_URI_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]"


def _uri_group(url: exp.Expression, group: int) -> exp.Expression:
    return fn("regexp_extract", url.copy(), _s(_URI), exp.Literal.number(group))


def _present(url: exp.Expression, marker: int, group: int) -> exp.Expression:
    """A part that may be absent (NULL) or empty ('')."""
    return exp.Case(
        ifs=[exp.If(this=exp.EQ(this=_uri_group(url, marker), expression=_s("")), true=exp.Null())],
        default=_uri_group(url, group),
    )


def url_part_sql(url: exp.Expression, part: str) -> exp.Expression:
    """java.net.URI's raw ``part`` of ``url`` as native SQL (query/td_udfs.py's
    ``url_part`` is the reference the tests hold it to)."""
    authority = _uri_group(url, 4)
    value: exp.Expression
    if part == "protocol":
        value = fn("nullif", _uri_group(url, 2), _s(""))
    elif part == "host":
        host = fn(
            "regexp_extract",
            authority,
            _s(r"^(?:[^@]*@)?(\[[^\]]*\]|[^:]*)"),
            exp.Literal.number(1),
        )
        value = exp.Case(
            ifs=[exp.If(this=fn("regexp_full_match", host.copy(), _s(_URI_HOST)), true=host)]
        )
    elif part == "port":
        digits = fn("regexp_extract", authority, _s(r":([0-9]+)$"), exp.Literal.number(1))
        value = exp.TryCast(this=fn("nullif", digits, _s("")), to=exp.DataType.build("BIGINT"))
    elif part == "path":
        opaque = exp.and_(
            exp.NEQ(this=_uri_group(url, 1), expression=_s("")),
            exp.EQ(this=_uri_group(url, 3), expression=_s("")),
            exp.Not(this=fn("starts_with", _uri_group(url, 5), _s("/"))),
        )
        value = exp.Case(ifs=[exp.If(this=opaque, true=exp.Null())], default=_uri_group(url, 5))
    elif part == "query":
        value = _present(url, 6, 7)
    elif part == "fragment":
        value = _present(url, 8, 9)
    else:
        raise Unsupported(f"url_extract_{part} does not exist")
    refused = fn("regexp_matches", url.copy(), _s(_URI_ILLEGAL))
    return exp.Case(ifs=[exp.If(this=refused, true=exp.Null())], default=value)


def _url_parameter(args: list[exp.Expression]) -> exp.Expression:
    """The raw value of the first ``name=`` of the query ('' for a bare ``name``)."""
    if len(args) != 2:
        raise Unsupported("url_extract_parameter takes a URL and a name")
    url, name = args
    text = _literal_text(name)
    if text is None:
        return fn("td_url_parameter", url, name)
    query = url_part_sql(url, "query")
    pattern = _s(f"(?:^|&){re.escape(text)}(?:=([^&]*))?(?:&|$)")
    return exp.Case(
        ifs=[
            exp.If(
                this=fn("regexp_matches", query.copy(), pattern),
                true=fn("regexp_extract", query.copy(), pattern.copy(), exp.Literal.number(1)),
            )
        ]
    )


def _url(part: str) -> Callable[[list[exp.Expression]], exp.Expression]:
    def build(args: list[exp.Expression]) -> exp.Expression:
        if part == "parameter":
            return _url_parameter(args)
        if len(args) != 1:
            raise Unsupported(f"url_extract_{part} takes one argument")
        return url_part_sql(args[0], part)

    return build


def _keyed_entries(key: exp.Expression, value: exp.Expression) -> exp.Expression:
    """The aggregate's rows as a list of ``{k, v}`` structs, rows with a NULL key left out."""
    pair = exp.Struct(
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier("k"), expression=key),
            exp.PropertyEQ(this=exp.to_identifier("v"), expression=value),
        ]
    )
    return exp.Filter(
        this=fn("list", pair),
        expression=exp.Where(this=exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null()))),
    )


def _map_agg(args: list[exp.Expression]) -> exp.Expression:
    """``map_agg(k, v)``: one entry per key (the first seen wins), NULL keys skipped."""
    if len(args) != 2:
        raise Unsupported("map_agg takes a key and a value")
    entries = _keyed_entries(*args)
    # DuckDB refuses duplicate keys: entry i stays only if its key is first seen there.
    # The two copies of the aggregate are bound once.
    first = exp.EQ(
        this=fn(
            "list_position",
            fn(
                "list_transform",
                entries.copy(),
                exp.Lambda(this=_field("x", "k"), expressions=[exp.to_identifier("x")]),
            ),
            _field("e", "k"),
        ),
        expression=exp.column("i"),
    )
    unique = fn(
        "list_filter",
        entries,
        exp.Lambda(this=first, expressions=[exp.to_identifier("e"), exp.to_identifier("i")]),
    )
    return fn("map_from_entries", unique)


def _multimap_agg(args: list[exp.Expression]) -> exp.Expression:
    """``multimap_agg(k, v)``: each key (first seen first) to the array of its values;
    NULL keys skipped, as map_agg skips them."""
    if len(args) != 2:
        raise Unsupported("multimap_agg takes a key and a value")
    entries = _keyed_entries(*args)
    keys = _distinct_in_order(
        fn(
            "list_transform",
            entries.copy(),
            exp.Lambda(this=_field("__e", "k"), expressions=[_ident("__e")]),
        )
    )
    same_key = exp.EQ(this=_field("__e", "k"), expression=exp.column("__key"))
    values = fn(
        "list_transform",
        fn("list_filter", entries, exp.Lambda(this=same_key, expressions=[_ident("__e")])),
        exp.Lambda(this=_field("__e", "v"), expressions=[_ident("__e")]),
    )
    group = exp.Struct(
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier("key"), expression=exp.column("__key")),
            exp.PropertyEQ(this=exp.to_identifier("value"), expression=values),
        ]
    )
    groups = fn("list_transform", keys, exp.Lambda(this=group, expressions=[_ident("__key")]))
    return fn("map_from_entries", groups)


def _to_iso8601(args: list[exp.Expression]) -> exp.Expression:
    """``to_iso8601(date)``. A timestamp's text in Trino has as many fraction digits as
    its type's precision, which DuckDB does not keep: refused rather than guessed."""
    if len(args) != 1:
        raise Unsupported("to_iso8601 takes one value")
    if zoned.zone_of(args[0]) is not None:
        raise Unsupported("to_iso8601 of a timestamp is not supported; format_datetime is")
    is_date = exp.EQ(this=fn("typeof", args[0].copy()), expression=_s("DATE"))
    refused = fn("error", _s("to_iso8601 of a timestamp is not supported; format_datetime is"))
    day = fn("strftime", args[0], _s("%Y-%m-%d"))
    missing = exp.Is(this=args[0].copy(), expression=exp.Null())
    return exp.Case(
        ifs=[exp.If(this=is_date, true=day), exp.If(this=missing, true=exp.Null())],
        default=refused,
    )


def _field(var: str, name: str) -> exp.Expression:
    return exp.Dot(this=exp.to_identifier(var), expression=exp.to_identifier(name))


def _approx_set(args: list[exp.Expression]) -> exp.Expression:
    # The set itself: cardinality() and merge() then give exact counts, which is
    # within any HyperLogLog's error.
    if len(args) != 1:
        raise Unsupported("approx_set takes one argument (the error bound is not supported)")
    return exp.Filter(
        this=fn("list", exp.Distinct(expressions=[args[0]])),
        expression=exp.Where(this=exp.Not(this=exp.Is(this=args[0].copy(), expression=exp.Null()))),
    )


def _merge(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 1:
        raise Unsupported("merge takes one argument")
    return fn("list_distinct", fn("flatten", fn("list", args[0])))


def _every(args: list[exp.Expression]) -> exp.Expression:
    return fn("bool_and", *args)


def _zip(args: list[exp.Expression]) -> exp.Expression:
    if len(args) < 2:
        raise Unsupported("zip takes two or more arrays")
    return fn("list_zip", *args)


def _map_filter(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2 or not isinstance(args[1], exp.Lambda):
        raise Unsupported("map_filter takes a map and a lambda (k, v) -> condition")
    lam = args[1]
    params = [p.name for p in lam.expressions]
    if len(params) != 2:
        raise Unsupported("map_filter's lambda takes two parameters (k, v)")
    body = _substitute(lam.this, {params[0]: "key", params[1]: "value"}, "__entry")
    filtered = fn(
        "list_filter",
        fn("map_entries", args[0]),
        exp.Lambda(this=body, expressions=[exp.to_identifier("__entry")]),
    )
    return fn("map_from_entries", filtered)


def _substitute(body: exp.Expression, fields: dict[str, str], var: str) -> exp.Expression:
    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and node.name in fields:
            return fn("struct_extract", exp.column(var), _s(fields[node.name]))
        bare = isinstance(node, exp.Identifier) and not isinstance(node.parent, exp.Column)
        if bare and node.name in fields:
            return fn("struct_extract", exp.column(var), _s(fields[node.name]))
        return node

    return body.copy().transform(swap)


def _at_timezone(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise Unsupported("at_timezone takes a timestamp and a zone")
    return _at_zone(args[0], args[1], "at_timezone")


def _map_entries_fn(name: str) -> Callable[[list[exp.Expression]], exp.Expression]:
    """``transform_keys`` / ``transform_values`` over DuckDB's map entries."""

    def build(args: list[exp.Expression]) -> exp.Expression:
        if len(args) != 2 or not isinstance(args[1], exp.Lambda):
            raise Unsupported(f"{name} takes a map and a lambda (k, v) -> value")
        lam = args[1]
        params = [p.name for p in lam.expressions]
        if len(params) != 2:
            raise Unsupported(f"{name}'s lambda takes two parameters (k, v)")
        body = _substitute(lam.this, {params[0]: "key", params[1]: "value"}, "__entry")
        key = (
            body
            if name == "transform_keys"
            else fn("struct_extract", exp.column("__entry"), _s("key"))
        )
        value = (
            body
            if name == "transform_values"
            else fn("struct_extract", exp.column("__entry"), _s("value"))
        )
        pair = exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier("key"), expression=key),
                exp.PropertyEQ(this=exp.to_identifier("value"), expression=value),
            ]
        )
        entries = fn(
            "list_transform",
            fn("map_entries", args[0]),
            exp.Lambda(this=pair, expressions=[exp.to_identifier("__entry")]),
        )
        return fn("map_from_entries", entries)

    return build


def _map_entries(args: list[exp.Expression]) -> exp.Expression:
    # Presto's entries are unnamed rows (JSON arrays in results), DuckDB's named structs.
    pair = exp.Tuple(
        expressions=[
            fn("struct_extract", exp.column("__entry"), _s("key")),
            fn("struct_extract", exp.column("__entry"), _s("value")),
        ]
    )
    return fn(
        "list_transform",
        fn("map_entries", *args),
        exp.Lambda(this=fn("row", *pair.expressions), expressions=[exp.to_identifier("__entry")]),
    )


def _json_array_get(args: list[exp.Expression]) -> exp.Expression:
    """The element at a zero-based index (negative from the end); a string element
    comes back without its quotes, as Presto's (documented as broken) function does."""
    if len(args) != 2:
        raise Unsupported("json_array_get takes a JSON array and an index")
    array, index = args
    path = exp.Case(
        ifs=[
            exp.If(
                this=exp.GTE(this=index.copy(), expression=exp.Literal.number(0)),
                true=exp.DPipe(
                    this=exp.DPipe(this=_s("$["), expression=_varchar(index.copy()), safe=True),
                    expression=_s("]"),
                    safe=True,
                ),
            )
        ],
        default=exp.DPipe(
            this=exp.DPipe(this=_s("$[#"), expression=_varchar(index.copy()), safe=True),
            expression=_s("]"),
            safe=True,
        ),
    )
    element = fn("json_extract", exp.cast(array, exp.DataType.build("JSON")), path)
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(this=fn("json_type", element.copy()), expression=_s("VARCHAR")),
                true=fn("json_extract_string", element.copy(), _s("$")),
            )
        ],
        default=_varchar(element),
    )


def _varchar(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, exp.DataType.build("VARCHAR"))


def _json_array_contains(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise Unsupported("json_array_contains takes a JSON array and a value")
    elements = fn("json_extract", exp.cast(args[0], exp.DataType.build("JSON")), _s("$[*]"))
    return fn("list_contains", elements, fn("to_json", args[1]))


def _json_size(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise Unsupported("json_size takes a JSON value and a path")
    value = fn("json_extract", exp.cast(args[0], exp.DataType.build("JSON")), args[1])
    kind = fn("json_type", value.copy())
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(this=kind.copy(), expression=_s("ARRAY")),
                true=fn("json_array_length", value.copy()),
            ),
            exp.If(
                this=exp.EQ(this=kind.copy(), expression=_s("OBJECT")),
                true=fn("len", fn("json_keys", value.copy())),
            ),
            exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null()),
        ],
        default=exp.Literal.number(0),
    )


def _is_json_scalar(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 1:
        raise Unsupported("is_json_scalar takes one argument")
    kind = fn("json_type", exp.cast(args[0], exp.DataType.build("JSON")))
    return exp.Not(this=exp.In(this=kind, expressions=[_s("ARRAY"), _s("OBJECT")]))


def _timezone(args: list[exp.Expression]) -> exp.Expression:
    if len(args) == 1:
        raise Unsupported("timezone(timestamp) is not supported (DuckDB keeps no zone in a value)")
    return fn("timezone", *args)


def _trim_array(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise Unsupported("trim_array takes an array and a count")
    array, n = args
    return fn(
        "list_slice",
        array,
        exp.Literal.number(1),
        exp.Sub(this=fn("len", array.copy()), expression=n),
    )


def _array_histogram(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 1:
        raise Unsupported("array_histogram takes one array")
    counts = fn("list_aggregate", args[0], _s("histogram"))
    return fn("coalesce", counts, fn("map"))


def _ngrams(args: list[exp.Expression]) -> exp.Expression:
    """``ngrams(array, n)``: the runs of n adjacent elements; the array itself if shorter."""
    if len(args) != 2:
        raise Unsupported("ngrams takes an array and n")
    array, n = args
    i = exp.column("__i")
    window = fn(
        "list_slice",
        array.copy(),
        i,
        exp.Sub(this=exp.Add(this=i.copy(), expression=n.copy()), expression=exp.Literal.number(1)),
    )
    starts = fn(
        "range",
        exp.Literal.number(1),
        exp.Add(
            this=exp.Sub(this=fn("len", array.copy()), expression=n.copy()),
            expression=exp.Literal.number(2),
        ),
    )
    runs = fn(
        "list_transform", starts, exp.Lambda(this=window, expressions=[exp.to_identifier("__i")])
    )
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.LTE(this=fn("len", array.copy()), expression=n.copy()),
                true=exp.Array(expressions=[array.copy()]),
            )
        ],
        default=runs,
    )


def _zip_with(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 3 or not isinstance(args[2], exp.Lambda) or len(args[2].expressions) != 2:
        raise Unsupported("zip_with takes two arrays and a lambda (x, y) -> value")
    lam = args[2]
    x, y = (p.name for p in lam.expressions)
    pairs = fn("list_zip", args[0], args[1])
    body = _substitute_index(lam.this, {x: 1, y: 2}, "__pair")
    return fn(
        "list_transform", pairs, exp.Lambda(this=body, expressions=[exp.to_identifier("__pair")])
    )


def _map_zip_with(args: list[exp.Expression]) -> exp.Expression:
    """``map_zip_with(m1, m2, (k, v1, v2) -> …)``: over the keys of both (those of m1
    first), a value missing from one map NULL."""
    if len(args) != 3 or not isinstance(args[2], exp.Lambda) or len(args[2].expressions) != 3:
        raise Unsupported("map_zip_with takes two maps and a lambda (k, v1, v2) -> value")
    first, second, lam = args
    k, v1, v2 = (p.name for p in lam.expressions)
    key = exp.column("__k")
    values = {
        k: key,
        v1: fn("map_extract_value", first.copy(), key.copy()),
        v2: fn("map_extract_value", second.copy(), key.copy()),
    }

    def swap(node: exp.Expression) -> exp.Expression:
        named = isinstance(node, exp.Column) and not node.table
        bare = isinstance(node, exp.Identifier) and not isinstance(node.parent, exp.Column)
        if (named or bare) and node.name in values:
            return values[node.name].copy()
        return node

    body = lam.this.copy().transform(swap)
    keys = _distinct_in_order(fn("list_concat", fn("map_keys", first), fn("map_keys", second)))
    pair = exp.Struct(
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier("key"), expression=key.copy()),
            exp.PropertyEQ(this=exp.to_identifier("value"), expression=body),
        ]
    )
    entries = fn("list_transform", keys, exp.Lambda(this=pair, expressions=[_ident("__k")]))
    return fn("map_from_entries", entries)


def _substitute_index(body: exp.Expression, fields: dict[str, int], var: str) -> exp.Expression:
    def swap(node: exp.Expression) -> exp.Expression:
        named = isinstance(node, exp.Column) and not node.table
        bare = isinstance(node, exp.Identifier) and not isinstance(node.parent, exp.Column)
        if (named or bare) and node.name in fields:
            return fn("struct_extract", exp.column(var), exp.Literal.number(fields[node.name]))
        return node

    return body.copy().transform(swap)


def _match(kind: str) -> Callable[[list[exp.Expression]], exp.Expression]:
    """``any_match`` / ``all_match`` / ``none_match`` with Presto's NULLs: unknown when
    no element decides and some predicate is NULL."""

    def build(args: list[exp.Expression]) -> exp.Expression:
        if len(args) != 2 or not isinstance(args[1], exp.Lambda):
            raise Unsupported(f"{kind} takes an array and a lambda")
        tests = fn("list_transform", args[0], args[1])
        decisive = exp.false() if kind == "all_match" else exp.true()
        has_null = exp.Not(
            this=exp.Is(this=fn("list_position", tests.copy(), exp.Null()), expression=exp.Null())
        )
        when_decisive = exp.true() if kind == "any_match" else exp.false()
        otherwise = exp.false() if kind == "any_match" else exp.true()
        return exp.Case(
            ifs=[
                exp.If(this=fn("list_contains", tests, decisive), true=when_decisive),
                exp.If(this=has_null, true=exp.Null()),
            ],
            default=otherwise,
        )

    return build


def _arrays_overlap(args: list[exp.Expression]) -> exp.Expression:
    if len(args) != 2:
        raise Unsupported("arrays_overlap takes two arrays")
    a, b = args

    def has_null(array: exp.Expression) -> exp.Expression:
        position = fn("list_position", array.copy(), exp.Null())
        return exp.Not(this=exp.Is(this=position, expression=exp.Null()))

    return exp.Case(
        ifs=[
            exp.If(this=fn("list_has_any", a.copy(), b.copy()), true=exp.true()),
            exp.If(this=exp.or_(has_null(a), has_null(b)), true=exp.Null()),
        ],
        default=exp.false(),
    )


_MAPS = tuple(
    getattr(exp, name) for name in ("Map", "VarMap", "MapFromEntries") if hasattr(exp, name)
)


def _cosine(args: list[exp.Expression], distance: bool) -> exp.Expression:
    """``cosine_similarity`` / ``cosine_distance`` of two arrays, or of two sparse
    vectors (maps) where an argument is written as a map."""
    if len(args) != 2:
        raise Unsupported("cosine_similarity and cosine_distance take two vectors")
    if not any(isinstance(a, _MAPS) for a in args):
        return fn("list_cosine_distance" if distance else "list_cosine_similarity", *args)
    similarity = fn("presto_map_cosine_similarity", *args)
    if not distance:
        return similarity
    return exp.Sub(this=exp.Literal.number(1), expression=similarity)


def _url_encode(args: list[exp.Expression]) -> exp.Expression:
    """java.net.URLEncoder: a space is '+', '*' stays, '~' is escaped (DuckDB: the
    reverse of each)."""
    encoded = fn("url_encode", *args)
    for old, new in (("%20", "+"), ("%2A", "*"), ("~", "%7E")):
        encoded = fn("replace", encoded, _s(old), _s(new))
    return encoded


def _url_decode(args: list[exp.Expression]) -> exp.Expression:
    """java.net.URLDecoder: '+' is a space."""
    return exp.Try(this=fn("url_decode", fn("replace", *args, _s("+"), _s(" "))))


def _refuse(reason: str) -> Callable[[list[exp.Expression]], exp.Expression]:
    def build(args: list[exp.Expression]) -> exp.Expression:
        raise Unsupported(reason)

    return build


ANONYMOUS: dict[str, Callable[[list[exp.Expression]], exp.Expression]] = {
    "TRIM_ARRAY": _trim_array,
    "ANY_MATCH": _match("any_match"),
    "ALL_MATCH": _match("all_match"),
    "NONE_MATCH": _match("none_match"),
    "ARRAYS_OVERLAP": _arrays_overlap,
    "ARRAY_UNION": lambda args: _distinct_in_order(fn("list_concat", *args)),
    "NAN": lambda args: exp.cast(_s("NaN"), exp.DataType.build("DOUBLE")),
    "TO_BASE": lambda args: fn("lower", fn("to_base", *args)),
    "URL_ENCODE": _url_encode,
    "URL_DECODE": _url_decode,
    "CODEPOINT": lambda args: fn("unicode", *args),
    "HAMMING_DISTANCE": lambda args: fn("hamming", *args),
    "ARRAY_HISTOGRAM": _array_histogram,
    "NGRAMS": _ngrams,
    "ZIP_WITH": _zip_with,
    "COSINE_SIMILARITY": lambda args: _cosine(args, distance=False),
    "LUHN_CHECK": lambda args: fn("td_luhn_check", *args),
    "TRANSFORM_KEYS": _map_entries_fn("transform_keys"),
    "TRANSFORM_VALUES": _map_entries_fn("transform_values"),
    "MAP_ENTRIES": _map_entries,
    "JSON_ARRAY_GET": _json_array_get,
    "JSON_ARRAY_CONTAINS": _json_array_contains,
    "JSON_SIZE": _json_size,
    "IS_JSON_SCALAR": _is_json_scalar,
    "TIMEZONE": _timezone,
    "TO_ISO8601": _to_iso8601,
    "URL_EXTRACT_HOST": _url("host"),
    "URL_EXTRACT_PATH": _url("path"),
    "URL_EXTRACT_QUERY": _url("query"),
    "URL_EXTRACT_PROTOCOL": _url("protocol"),
    "URL_EXTRACT_PORT": _url("port"),
    "URL_EXTRACT_FRAGMENT": _url("fragment"),
    "URL_EXTRACT_PARAMETER": _url("parameter"),
    "MAP_AGG": _map_agg,
    "MULTIMAP_AGG": _multimap_agg,
    "FORMAT_DATETIME": _format_datetime,
    "APPROX_SET": _approx_set,
    "MERGE": _merge,
    "EVERY": _every,
    "ZIP": _zip,
    "MAP_FILTER": _map_filter,
    "MAP_ZIP_WITH": _map_zip_with,
    "AT_TIMEZONE": _at_timezone,
    "WITH_TIMEZONE": _with_timezone,
}

_LOCAL = tuple(
    getattr(exp, name)
    for name in (
        "TimeToStr",
        "Extract",
        "Year",
        "Month",
        "Day",
        "Hour",
        "Minute",
        "Second",
        "DayOfWeek",
        "DayOfWeekIso",
        "DayOfMonth",
        "DayOfYear",
        "Quarter",
        "Week",
        "WeekOfYear",
        "TsOrDsToDate",
        "LastDay",
        "Date",
    )
    if hasattr(exp, name)
)


_REGEXP = tuple(
    getattr(exp, name)
    for name in ("RegexpReplace", "RegexpExtract", "RegexpExtractAll", "RegexpLike", "RegexpSplit")
    if hasattr(exp, name)
)


def _reduce(node: exp.Reduce) -> exp.Expression:
    """``reduce(array, start, (s, x) -> …, s -> output)``: the output function applied
    around DuckDB's reduce, which has none."""
    finish = node.args.get("finish")
    if finish is None:
        return node
    node.set("finish", None)
    if not isinstance(finish, exp.Lambda) or len(finish.expressions) != 1:
        raise Unsupported("reduce's output function must be a lambda of one parameter")
    param = finish.expressions[0].name
    if isinstance(finish.this, exp.Column | exp.Identifier) and finish.this.name == param:
        return node  # the identity: s -> s

    def swap(inner: exp.Expression) -> exp.Expression:
        if isinstance(inner, exp.Column) and not inner.table and inner.name == param:
            return exp.Paren(this=node.copy())
        bare = isinstance(inner, exp.Identifier) and not isinstance(inner.parent, exp.Column)
        if bare and inner.name == param:
            return exp.Paren(this=node.copy())
        return inner

    result: exp.Expression = finish.this.copy().transform(swap)
    return result


def _json_path(node: exp.Expression) -> exp.Expression:
    path = node.expression
    return exp.Literal.string(path.sql("duckdb")[1:-1]) if isinstance(path, exp.JSONPath) else path


def _json_extract(node: exp.JSONExtract) -> exp.Expression:
    """Malformed JSON gives NULL, as in Presto (DuckDB fails the query)."""
    value = exp.Try(this=fn("json_extract", node.this, _json_path(node)))
    value.meta[_JSON] = True
    return value


def _json_extract_scalar(node: exp.JSONExtractScalar) -> exp.Expression:
    """A scalar's text; NULL for an array, an object, a JSON null or malformed JSON."""
    path = _json_path(node)
    value = exp.Try(this=fn("json_extract", node.this.copy(), path.copy()))
    not_scalar = exp.In(this=fn("json_type", value), expressions=[_s("ARRAY"), _s("OBJECT")])
    return exp.Case(
        ifs=[exp.If(this=not_scalar, true=exp.Null())],
        default=exp.Try(this=fn("json_extract_string", node.this, path)),
    )


def _split(node: exp.Split) -> exp.Expression:
    """``split(s, d, limit)``: at most ``limit`` parts, the last holding the rest."""
    limit = node.args.get("limit")
    parts = fn("string_split", node.this, node.expression)
    if limit is None:
        return parts
    rest = fn(
        "array_to_string",
        fn("list_slice", parts.copy(), limit.copy(), fn("len", parts.copy())),
        node.expression.copy(),
    )
    head = fn(
        "list_slice",
        parts.copy(),
        exp.Literal.number(1),
        exp.Sub(this=limit.copy(), expression=exp.Literal.number(1)),
    )
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.LTE(this=fn("len", parts.copy()), expression=limit.copy()),
                true=parts.copy(),
            )
        ],
        default=fn("list_concat", head, exp.Array(expressions=[rest])),
    )


def _distinct_in_order(array: exp.Expression) -> exp.Expression:
    """The first of each value, in the array's order (DuckDB's list_distinct has none)."""
    first = exp.EQ(
        this=fn("list_position", array.copy(), exp.column("__x")), expression=exp.column("__i")
    )
    return fn(
        "list_filter",
        array,
        exp.Lambda(this=first, expressions=[exp.to_identifier("__x"), exp.to_identifier("__i")]),
    )


def _sequence(node: exp.GenerateSeries) -> exp.Expression:
    start, end = node.args.get("start"), node.args.get("end")
    if node.args.get("step") is not None or start is None or end is None:
        return node
    step = exp.Case(
        ifs=[
            exp.If(
                this=exp.LTE(this=start.copy(), expression=end.copy()), true=exp.Literal.number(1)
            )
        ],
        default=exp.Literal.number(-1),
    )
    node.set("step", step)
    return node


def _repeat(node: exp.Repeat) -> exp.Expression:
    """Presto's ``repeat(element, count)`` makes an array."""
    times = node.args.get("times")
    if not isinstance(times, exp.Expression):
        raise Unsupported("repeat takes an element and a count")
    return fn(
        "list_transform",
        fn("range", times),
        exp.Lambda(this=node.this, expressions=[exp.to_identifier("__i")]),
    )


def _extract(node: exp.Extract) -> exp.Expression:
    field = node.this.name.upper() if isinstance(node.this, exp.Expression) else ""
    value = zoned.local_of(node.expression)
    if field in ("DOW", "DAY_OF_WEEK", "DAYOFWEEK"):
        return fn("isodow", value)  # Monday 1 … Sunday 7 (DuckDB's DOW has Sunday 0)
    if field in ("YOW", "YEAR_OF_WEEK"):
        return fn("isoyear", value)
    node.set("expression", value)
    return node


def _substring(node: exp.Substring) -> exp.Expression:
    """``substr(s, start[, length])`` with Presto's empty answers (query/macros.py)."""
    start, length = node.args.get("start"), node.args.get("length")
    if start is None:
        return node
    if length is None:
        return fn("presto_substr_from", node.this, start)
    return fn("presto_substr", node.this, start, length)


# An ISO 8601 time's offset: Z, ±hh, ±hhmm or ±hh:mm after the time of day.
_ISO_OFFSET = re.compile(r"T[0-9:.,]*(Z|([+-])(\d{2}):?(\d{2})?)\s*$")


def _from_iso8601_timestamp(text: exp.Expression) -> exp.Expression:
    """``from_iso8601_timestamp(s)``: the instant, in the zone of the string's offset.

    DuckDB reads the instant and drops the offset. For a constant string the offset is
    read here and kept as the value's zone; a string from a column would need a zone
    per row, which a value here cannot carry (query/zoned.py's ROW_OFFSET).
    """
    instant = exp.cast(text.copy(), exp.DataType.build("TIMESTAMPTZ"))
    literal = _literal_text(text)
    if literal is None:
        return zoned.per_row(instant, text)
    m = _ISO_OFFSET.search(literal)
    if m is None or m.group(1) == "Z":
        return zoned.tag(instant, "UTC")
    sign, hours, minutes = m.group(2), m.group(3), m.group(4) or "00"
    return zoned.tag(instant, zoned.label(f"{sign}{hours}:{minutes}"))


def _current_time(node: exp.Expression) -> exp.Expression:
    """``current_timestamp(p)``: results print a timestamp to milliseconds, so only
    Presto's default precision, 3, gives Presto's text."""
    precision = node.this if isinstance(node.this, exp.Expression) else None
    if precision is not None and _int_literal(precision) != 3:
        names: dict[type[exp.Expression], str] = {
            exp.CurrentTimestamp: "current_timestamp",
            exp.Localtimestamp: "localtimestamp",
            exp.CurrentTime: "current_time",
        }
        name = names[type(node)]
        raise Unsupported(
            f"{name}({precision.sql('trino')}) is not supported: "
            f"results print timestamps to milliseconds; use {name}"
        )
    node.set("this", None)
    return node


def _format(node: exp.Expression) -> exp.Expression:
    """``format(fmt, args…)``: Java's Formatter, run in Python over the JSON of the
    arguments (query/td_udfs.py)."""
    args = [node.this, *node.expressions]
    values = exp.Array(expressions=[fn("to_json", a) for a in args[1:]])
    return fn("td_java_format", _varchar(args[0]), _varchar(fn("to_json", values)))


def rewrite(node: exp.Expression) -> exp.Expression:
    """Presto's meaning for ``node`` (whose arguments are rewritten already)."""
    if isinstance(node, exp.ArraySort) and isinstance(node.expression, exp.Lambda):
        raise Unsupported("array_sort with a comparator lambda is not supported")
    if isinstance(node, exp.Typeof):
        raise Unsupported("typeof is not supported: DuckDB's type names are not Trino's")
    if isinstance(node, exp.CosineDistance):
        return _cosine([node.this, node.expression], distance=True)
    if isinstance(node, exp.Substring):
        return _substring(node)
    if isinstance(node, exp.ArrayMax | exp.ArrayMin):
        # NULL when an element is NULL (query/macros.py).
        name = "presto_array_max" if isinstance(node, exp.ArrayMax) else "presto_array_min"
        return fn(name, node.this)
    if isinstance(node, exp.ArrayContains):
        return fn("presto_contains", node.this, node.expression)
    if isinstance(node, exp.Sign) and not isinstance(node.this, exp.Null):
        return fn("presto_sign", node.this)
    if isinstance(node, exp.FromISO8601Timestamp):
        return _from_iso8601_timestamp(node.this)
    if isinstance(node, exp.FromISO8601TimestampNanos):
        raise Unsupported(
            "from_iso8601_timestamp_nanos is not supported: DuckDB keeps microseconds, "
            "not nanoseconds (from_iso8601_timestamp gives milliseconds)"
        )
    if isinstance(node, exp.CurrentTimestamp | exp.Localtimestamp | exp.CurrentTime):
        return _current_time(node)
    if isinstance(node, exp.Format):
        return _format(node)
    if isinstance(node, exp.JSONArrayContains):
        return _json_array_contains([node.this, node.expression])
    if isinstance(node, exp.JSONExtractScalar):
        return _json_extract_scalar(node)
    if isinstance(node, exp.JSONExtract):
        return _json_extract(node)
    if isinstance(node, exp.SplitPart):
        # Past the last field Presto gives NULL, DuckDB ''.
        return fn(
            "list_extract",
            fn("string_split", node.this, node.args["delimiter"]),
            node.args["part_index"],
        )
    if isinstance(node, exp.Split):
        return _split(node)
    if isinstance(node, exp.ArrayPosition):
        return fn(
            "coalesce", fn("list_position", node.this, node.expression), exp.Literal.number(0)
        )
    if isinstance(node, exp.ArrayDistinct):
        return _distinct_in_order(node.this)
    if isinstance(node, exp.ArrayExcept):
        excluded = exp.Not(this=fn("list_contains", node.expression, exp.column("__x")))
        return fn(
            "list_filter",
            _distinct_in_order(node.this),
            exp.Lambda(this=excluded, expressions=[exp.to_identifier("__x")]),
        )
    if isinstance(node, exp.GenerateSeries):
        return _sequence(node)
    if isinstance(node, exp.Repeat):
        return _repeat(node)
    if isinstance(node, exp.Extract):
        return _extract(node)
    if isinstance(node, exp.DotProduct):
        return fn("list_dot_product", node.this, node.expression)
    if isinstance(node, exp.Reduce):
        return _reduce(node)
    if isinstance(node, exp.Div):
        # Presto's division follows the operands' types, known once DuckDB binds the
        # query: the macros of query/division.py choose. Inside try() a zero divisor
        # gives NULL (DuckDB's TRY refuses the error function, which it counts as
        # volatile).
        inside_try = node.find_ancestor(exp.Try) is not None
        name = "presto_try_divide" if inside_try else "presto_divide"
        return fn(name, node.this, node.expression)
    if isinstance(node, exp.Anonymous):
        handler = ANONYMOUS.get(str(node.this).upper())
        return node if handler is None else handler(list(node.expressions))
    if isinstance(node, exp.UnixToTime):
        return _unix_to_time(node)
    if isinstance(node, exp.AtTimeZone):
        return _at_zone(node.this, node.args.get("zone"), "AT TIME ZONE")
    if isinstance(node, exp.Cast):  # TryCast too
        return _cast(node)
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
        return _trunc(node)
    if isinstance(node, exp.DateAdd | exp.TimestampAdd):
        return _date_add(node)
    if isinstance(node, exp.DateDiff):
        return _date_diff(node)
    if isinstance(node, exp.ArraySlice):
        return _slice(node)
    if isinstance(node, _REGEXP):
        return _regexp(node)
    if isinstance(node, exp.ApproxQuantile):
        return _approx_quantile(node)
    if isinstance(node, _LOCAL):
        return _local_args(node)
    if isinstance(node, _KEEPS_ZONE) and zoned.zone_of(node.this) == zoned.ROW_OFFSET:
        node.set("this", zoned.in_utc(node.this))
    if isinstance(node, (exp.Paren, exp.Alias, *_KEEPS_ZONE)):
        return zoned.tag(node, zoned.zone_of(node.this))
    if isinstance(node, exp.Add | exp.Sub):
        return _interval_arithmetic(node)
    if isinstance(node, exp.Coalesce | exp.Case | exp.If):
        return _same_zone(node)
    return node


# An aggregate or window function that picks one of its values keeps their zone (a
# window, its function's).
_KEEPS_ZONE = tuple(
    getattr(exp, name)
    for name in (
        "Max",
        "Min",
        "AnyValue",
        "ArgMax",
        "ArgMin",
        "First",
        "Last",
        "FirstValue",
        "LastValue",
        "NthValue",
        "Lag",
        "Lead",
        "Window",
    )
    if hasattr(exp, name)
)


def _interval_arithmetic(node: exp.Add | exp.Sub) -> exp.Expression:
    """A zoned value plus or minus an interval: calendar arithmetic in its zone."""
    zone_label = zoned.zone_of(node.this)
    if zone_label is None or not isinstance(node.expression, exp.Interval):
        return node
    node.set("this", zoned.to_local(node.this, zone_label))
    return zoned.from_local(node, zone_label)


def _same_zone(node: exp.Expression) -> exp.Expression:
    """COALESCE / CASE / IF of values in one zone are in that zone."""
    for value in _branches(node):
        if zoned.zone_of(value) == zoned.ROW_OFFSET:
            value.replace(zoned.in_utc(value.copy()))  # its own zone cannot follow the mix
    labels = {zoned.zone_of(v) for v in _branches(node) if not isinstance(v, exp.Null)}
    if len(labels) == 1:
        return zoned.tag(node, labels.pop())
    return node


def _branches(node: exp.Expression) -> list[exp.Expression]:
    """The values a COALESCE / CASE / IF may give."""
    if isinstance(node, exp.Coalesce):
        return [node.this, *node.expressions]
    if isinstance(node, exp.Case):
        values = [i.args["true"] for i in node.args.get("ifs") or []]
        return [*values, node.args.get("default") or exp.Null()]
    return [node.args["true"], node.args.get("false") or exp.Null()]
