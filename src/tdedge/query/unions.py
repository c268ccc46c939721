"""Zoned timestamps through UNION, INTERSECT and EXCEPT.

A zone is carried beside an expression (query/zoned.py), so a column of a set
operation has one zone only where every branch gives its values in the same one. In
Presto each row keeps its own zone; here branches in different zones can still be
printed (each branch as its own text) at the top of the query, but not read further:
a subquery or CTE over such a union fails with a named error rather than answering
calendar questions in UTC.
"""

from __future__ import annotations

from sqlglot import exp

from tdedge.query import zoned


def branches(query: exp.Expression) -> list[exp.Select] | None:
    """The SELECTs of a set operation, left to right; None where one is not a SELECT."""
    if isinstance(query, exp.Subquery):
        return branches(query.this)
    if isinstance(query, exp.Select):
        return [query]
    if isinstance(query, exp.SetOperation):
        left, right = branches(query.this), branches(query.expression)
        return None if left is None or right is None else left + right
    return None


def column_zones(query: exp.SetOperation) -> list[tuple[str, str]]:
    """``(column name, zone)`` of the zoned columns of ``query`` read as a source;
    ZoneNotKept where the branches' zones of a column differ."""
    selects = _aligned(query)
    if selects is None:
        return []
    out: list[tuple[str, str]] = []
    for position, projection in enumerate(selects[0].expressions):
        labels = _labels(selects, position)
        if not labels - {None, "UTC"}:
            continue  # instants in UTC, zoned or not: what a value of no zone is read as
        if len(labels) != 1:
            raise zoned.ZoneNotKept(
                f"column {projection.alias_or_name or position + 1} of a UNION, INTERSECT or "
                "EXCEPT has timestamps with time zone in different zones (or beside values "
                "of no zone); a value here keeps one zone for a whole column: give every "
                "branch the same zone with AT TIME ZONE"
            )
        label = labels.pop()
        if label is not None and projection.alias_or_name:
            out.append((projection.alias_or_name.lower(), label))
    return out


def print_zoned(query: exp.SetOperation) -> None:
    """The zoned columns of a set operation that is the whole query, printed as Presto
    prints them: each branch's values as the text of their own zone."""
    selects = _aligned(query)
    if selects is None:
        return
    for position in range(len(selects[0].expressions)):
        labels = _labels(selects, position)
        if not labels - {None, "UTC"}:
            continue  # TIMESTAMPTZ in UTC already prints so, and keeps its type
        if None in labels:
            raise zoned.ZoneNotKept(
                f"column {position + 1} of a UNION, INTERSECT or EXCEPT mixes timestamps "
                "with time zone and values of no known zone: give every branch a zone "
                "with AT TIME ZONE"
            )
        for select in selects:
            projection = select.expressions[position]
            value = projection.this if isinstance(projection, exp.Alias) else projection
            label = zoned.zone_of(value)
            if label is None:  # a NULL
                continue
            text = zoned.as_text(value.copy(), label)
            if isinstance(projection, exp.Alias):
                projection.set("this", text)
            else:
                projection.replace(exp.alias_(text, projection.alias_or_name or f"_col{position}"))


def _aligned(query: exp.SetOperation) -> list[exp.Select] | None:
    """The branches, each settled to one zone per column; None (nothing zoned to
    follow) where a branch is not a plain list of columns."""
    selects = branches(query)
    if selects is None:
        return None
    for select in selects:
        for i, projection in enumerate(select.expressions):
            if zoned.zone_of(projection) == zoned.ROW_OFFSET:
                if isinstance(projection, exp.Alias):
                    settled = zoned.in_utc(projection.this.copy())
                    projection.set("this", settled)
                else:
                    settled = zoned.in_utc(projection.copy())
                    select.expressions[i].replace(exp.alias_(settled, projection.alias_or_name))
    widths = {len(s.expressions) for s in selects}
    stars = any(isinstance(p, exp.Star) or p.is_star for s in selects for p in s.expressions)
    if len(widths) != 1 or stars:
        if any(zoned.zone_of(p) for s in selects for p in s.expressions):
            raise zoned.ZoneNotKept(
                "a UNION, INTERSECT or EXCEPT of timestamps with time zone needs its "
                "columns listed (not *) in every branch"
            )
        return None
    return selects


def _labels(selects: list[exp.Select], position: int) -> set[str | None]:
    """The zones of one column in the branches (a NULL has any zone)."""
    labels: set[str | None] = set()
    for select in selects:
        projection = select.expressions[position]
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if not isinstance(value, exp.Null):
            labels.add(zoned.zone_of(projection))
    return labels
