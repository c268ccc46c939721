"""Presto's ``timestamp with time zone`` on DuckDB, which keeps no zone in a value.

A DuckDB ``TIMESTAMPTZ`` is an instant read in the session zone (UTC for jobs). A
Presto value such as ``from_unixtime(t, 'Asia/Tokyo')`` is the same instant *and* a
zone, and every calendar question about it (its day, its hour, ``date_trunc``, how it
prints) is answered in that zone. The translator keeps the zone beside the expression
(``meta["zone"]``) while it rewrites bottom-up: the instant stays a TIMESTAMPTZ (so
comparisons and ``to_unixtime`` are right) and the zone is applied where a calendar
answer is asked for, by turning the instant into its wall-clock time there.
"""

from __future__ import annotations

from sqlglot import exp

from tdedge.query.timezones import Zone, resolve

ZONE = "zone"  # the meta key
# The label of a value whose zone is each row's own (``from_iso8601_timestamp`` of a
# column): answered in UTC where every row's offset is zero, refused otherwise.
ROW_OFFSET = "the offset of each row"
_OFFSET_TEXT = "offset_text"  # meta key: the text whose offset gives the zone
# An ISO 8601 offset after the time of day (RE2), and one of zero.
_OFFSET_SQL = r"T[0-9:.,]*[+-]\d{2}(:?\d{2})?\s*$"
_ZERO_OFFSET_SQL = r"T[0-9:.,]*[+-]00(:?00)?\s*$"


class ZoneNotKept(ValueError):
    """A calendar answer asked of a value whose zone varies by row and is lost."""


def zone_of(node: exp.Expression | None) -> str | None:
    """The Presto zone label carried by ``node``, through parentheses and aliases."""
    while isinstance(node, exp.Paren | exp.Alias):
        if node.meta.get(ZONE):
            break
        node = node.this
    if node is None:
        return None
    label = node.meta.get(ZONE)
    return label if isinstance(label, str) else None


def tag(node: exp.Expression, label: str | None) -> exp.Expression:
    if label is not None:
        node.meta[ZONE] = label
    return node


def label(name: str) -> str:
    """How Presto prints the zone ``name`` (an IANA id as given, an offset as ±hh:mm)."""
    zone = resolve(name)
    if zone.is_fixed:
        if zone.offset_s == 0:
            return "UTC"
        sign = "-" if zone.offset_s < 0 else "+"
        minutes = abs(zone.offset_s) // 60
        return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return zone.name or "UTC"


def per_row(instant: exp.Expression, text: exp.Expression) -> exp.Expression:
    """The instant read from ``text``, whose offset (if any) is its zone."""
    instant.meta[_OFFSET_TEXT] = text
    return tag(instant, ROW_OFFSET)


def in_utc(instant: exp.Expression) -> exp.Expression:
    """A value of ROW_OFFSET as an instant in UTC, failing the query at the first row
    whose offset is not zero (its calendar answers would be UTC's, not its zone's)."""
    node = instant
    while isinstance(node, exp.Paren | exp.Alias) and node.meta.get(_OFFSET_TEXT) is None:
        node = node.this
    text = node.meta.get(_OFFSET_TEXT) if node is not None else None
    if not isinstance(text, exp.Expression):
        raise ZoneNotKept(
            "a timestamp read by from_iso8601_timestamp from a column cannot carry the "
            "zone of its offset here: give it one with AT TIME ZONE"
        )
    offset = exp.and_(
        _fn("regexp_matches", text.copy(), exp.Literal.string(_OFFSET_SQL)),
        exp.Not(this=_fn("regexp_matches", text.copy(), exp.Literal.string(_ZERO_OFFSET_SQL))),
    )
    message = exp.DPipe(
        this=exp.Literal.string(
            "from_iso8601_timestamp: a string with an offset other than UTC is read in its "
            "zone only when it is a constant (a zone per row is not kept); give the value "
            "a zone with AT TIME ZONE: "
        ),
        expression=exp.cast(text.copy(), exp.DataType.build("VARCHAR")),
        safe=True,
    )
    checked = exp.Case(ifs=[exp.If(this=offset, true=_fn("error", message))], default=instant)
    return tag(exp.cast(checked, exp.DataType.build("TIMESTAMPTZ")), "UTC")


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _interval(seconds: int) -> exp.Expression:
    return exp.Interval(this=exp.Literal.string(str(seconds)), unit=exp.var("SECOND"))


def to_local(instant: exp.Expression, zone_label: str) -> exp.Expression:
    """The naive wall-clock TIMESTAMP of a TIMESTAMPTZ ``instant`` in the zone."""
    if zone_label == ROW_OFFSET:
        instant, zone_label = in_utc(instant), "UTC"
    zone: Zone = resolve(zone_label)
    if zone.is_fixed:
        utc = _fn("timezone", exp.Literal.string("UTC"), instant)
        if zone.offset_s == 0:
            return utc
        return exp.Paren(this=exp.Add(this=utc, expression=_interval(zone.offset_s)))
    return _fn("timezone", exp.Literal.string(zone.name or "UTC"), instant)


def from_local(local: exp.Expression, zone_label: str) -> exp.Expression:
    """The TIMESTAMPTZ instant of the naive wall-clock ``local`` in the zone."""
    if zone_label == ROW_OFFSET:
        zone_label = "UTC"  # to_local made it so, or failed
    zone = resolve(zone_label)
    if zone.is_fixed:
        moved = (
            local
            if zone.offset_s == 0
            else exp.Paren(this=exp.Sub(this=local, expression=_interval(zone.offset_s)))
        )
        return tag(_fn("timezone", exp.Literal.string("UTC"), moved), zone_label)
    return tag(_fn("timezone", exp.Literal.string(zone.name or "UTC"), local), zone_label)


def local_of(node: exp.Expression) -> exp.Expression:
    """``node`` as a wall-clock time when it carries a zone; unchanged otherwise."""
    zone_label = zone_of(node)
    return node if zone_label is None else to_local(node, zone_label)


def as_text(instant: exp.Expression, zone_label: str) -> exp.Expression:
    """How Presto prints the value: ``2026-12-02 00:00:00.000 Asia/Tokyo``."""
    if zone_label == ROW_OFFSET:
        instant, zone_label = in_utc(instant), "UTC"
    text = _fn(
        "strftime", to_local(instant, zone_label), exp.Literal.string("%Y-%m-%d %H:%M:%S.%g")
    )
    return exp.DPipe(this=text, expression=exp.Literal.string(f" {zone_label}"), safe=True)
