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


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _interval(seconds: int) -> exp.Expression:
    return exp.Interval(this=exp.Literal.string(str(seconds)), unit=exp.var("SECOND"))


def to_local(instant: exp.Expression, zone_label: str) -> exp.Expression:
    """The naive wall-clock TIMESTAMP of a TIMESTAMPTZ ``instant`` in the zone."""
    zone: Zone = resolve(zone_label)
    if zone.is_fixed:
        utc = _fn("timezone", exp.Literal.string("UTC"), instant)
        if zone.offset_s == 0:
            return utc
        return exp.Paren(this=exp.Add(this=utc, expression=_interval(zone.offset_s)))
    return _fn("timezone", exp.Literal.string(zone.name or "UTC"), instant)


def from_local(local: exp.Expression, zone_label: str) -> exp.Expression:
    """The TIMESTAMPTZ instant of the naive wall-clock ``local`` in the zone."""
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
    text = _fn(
        "strftime", to_local(instant, zone_label), exp.Literal.string("%Y-%m-%d %H:%M:%S.%g")
    )
    return exp.DPipe(this=text, expression=exp.Literal.string(f" {zone_label}"), safe=True)
