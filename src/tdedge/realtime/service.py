"""A personalization service compiled for the engine: keys, attributes, sections.

``compile_service`` is used both by ``tdedge p13n apply`` (to check a file: it reports
every problem through ``report``) and by the edge (to run it), so a file that applies is
a file the engine runs. A compiled Service is immutable and pure: it updates a profile
and evaluates sections with the time passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any

import msgspec

from tdedge.realtime import durations, offers
from tdedge.realtime.attributes import (
    Attribute,
    CounterAttribute,
    ImportedAttribute,
    ListAttribute,
    SingleAttribute,
    Update,
)
from tdedge.realtime.config import (
    COLUMN,
    MAX_ATTRIBUTES,
    P13N_NAME,
    SERVICE_NAME,
    CounterSpec,
    ImportedSpec,
    KeyColumn,
    ListSpec,
    LookupSpec,
    ServiceSpec,
    SingleSpec,
)
from tdedge.realtime.criteria import (
    Context,
    CriteriaError,
    Node,
    Scope,
    Test,
    Trace,
    compile_criteria,
)
from tdedge.realtime.identity import KeyRule, event_keys
from tdedge.realtime.lookup import Lookup
from tdedge.realtime.offers import Output, Render, Section
from tdedge.realtime.profile import Profile

Path = tuple[str | int, ...]
# A section a request can qualify for: its encoded key (b'"name":'), its test (None:
# none), its payload's id and how to render that payload.
_Candidate = tuple[bytes, "Test | None", int, Render]
_json = msgspec.json.Encoder()
_MAX_CANDIDATES = 1024
_NO_VALUES: Mapping[str, Any] = {}
Report = Callable[[Path, str], None]
EVENT_ONLY = Scope(profile=False)


class Facts:
    """What batch work knows about a profile's keys: segments and imported values."""

    __slots__ = ("imported", "segments")

    def __init__(
        self, segments: Collection[str] = (), imported: Mapping[str, Any] | None = None
    ) -> None:
        self.segments = segments
        self.imported: Mapping[str, Any] = imported or {}


NO_FACTS = Facts()


class BatchSource:
    """One batch query to run over the lake: a segment or an imported attribute."""

    __slots__ = ("kind", "name", "refresh_ms", "sql")

    def __init__(self, kind: str, name: str, sql: str, refresh_ms: int) -> None:
        self.kind = kind  # "segment" or "attribute"
        self.name = name  # segment id or attribute name
        self.sql = sql
        self.refresh_ms = refresh_ms


class Service:
    def __init__(
        self,
        name: str,
        database: str,
        event_tables: frozenset[str],
        keys: list[KeyRule],
        attributes: list[Attribute],
        sections: list[Section],
        sources: list[BatchSource],
        allowed_origins: frozenset[str],
        lookups: Mapping[str, Lookup] | None = None,
    ) -> None:
        self.name = name
        self.database = database
        self.event_tables = event_tables
        self.keys = keys
        self.attributes = attributes
        self.by_name = {a.name: a for a in attributes}
        self.sections = sections
        self.sources = sources
        self.allowed_origins = allowed_origins
        self.lookups: Mapping[str, Lookup] = lookups or {}
        self._updating = [a for a in attributes if not isinstance(a, ImportedAttribute)]
        # What apply() walks per event of each table: the attributes that table feeds,
        # unfiltered ones apart, with the look-ups done once here.
        self._plans = {table: self._plan(table) for table in event_tables}
        # Attribute references the sections read; only these are computed per request.
        refs: set[str] = set()
        for section in sections:
            refs.update(o.ref for o in section.outputs)
            for node in (section.criteria, section.key_filter):
                refs.update(_refs(node))
        self.refs = sorted(refs)
        self._candidates: dict[tuple[str, bool], list[_Candidate]] = {}
        self._payloads: dict[Hashable, int] = {}
        self._readers = [self._reader(r) for r in self.refs]
        self.needs_facts = bool(sources)

    def _plan(self, table: str) -> tuple[list[Update], list[tuple[Test, list[Update]]]]:
        """The updates an event of ``table`` runs: unfiltered ones, then each filter
        with the updates behind it (attributes with the same filter share one node, so
        it is tested once per event)."""
        always: list[Update] = []
        by_filter: dict[int, tuple[Test, list[Update]]] = {}
        for a in self._updating:
            if not _feeds(a, table):
                continue
            if a.filter is None:
                always.append(a.updater())
            else:
                by_filter.setdefault(id(a.filter), (a.filter.test, []))[1].append(a.updater())
        return always, list(by_filter.values())

    def event_keys(self, event: Mapping[str, Any]) -> list[str]:
        return event_keys(event, self.keys)

    def apply(self, profile: Profile, table: str, event: Mapping[str, Any], now_ms: int) -> None:
        """Update ``profile`` with one event."""
        profile.events += 1
        profile.updated_ms = now_ms
        plan = self._plans.get(table)
        if plan is None:
            return
        always, filtered = plan
        for update in always:
            update(profile, event, now_ms)
        if filtered:
            ctx = Context(event, _NO_VALUES, (), now_ms)
            for test, updates in filtered:
                if test(ctx):
                    for update in updates:
                        update(profile, event, now_ms)

    def tidy(self, profile: Profile, now_ms: int) -> None:
        """Expire and trim every attribute's state (after a merge, or before showing)."""
        for attribute in self._updating:
            attribute.tidy(profile, now_ms)

    def value(self, profile: Profile, ref: str, facts: Facts, now_ms: int) -> Any:
        name, _, sub = ref.partition(".")
        attribute = self.by_name.get(name)
        if attribute is None:
            return None
        if sub:
            return attribute.sub(profile, sub, facts.imported, now_ms)
        return attribute.value(profile, facts.imported, now_ms)

    def values(
        self, profile: Profile, facts: Facts, now_ms: int, refs: Collection[str] | None = None
    ) -> dict[str, Any]:
        if refs is None:
            imported = facts.imported
            return {ref: read(profile, imported, now_ms) for ref, read in self._readers}
        return {r: self.value(profile, r, facts, now_ms) for r in refs}

    def _reader(self, ref: str) -> tuple[str, Callable[[Profile, Mapping[str, Any], int], Any]]:
        name, _, sub = ref.partition(".")
        attribute = self.by_name[name]
        if not sub:
            return ref, attribute.reader()
        return ref, lambda p, imported, now: attribute.sub(p, sub, imported, now)

    def answer(
        self,
        profile: Profile,
        facts: Facts,
        table: str,
        event: Mapping[str, Any],
        created: bool,
        public: bool,
        now_ms: int,
    ) -> bytes:
        """The response body: the offers of every section the profile qualifies for.

        Built from encoded parts: sections with one payload share one render and one
        encoding, and a section's key is encoded once per configuration."""
        values = self.values(profile, facts, now_ms)
        segments = facts.segments
        ctx = Context(event, values, segments, now_ms)
        parts: list[bytes] = []
        encoded: dict[int, bytes] = {}
        for key, test, payload, render in self._eligible(table, created):
            if test is None or test(ctx):
                body = encoded.get(payload)
                if body is None:
                    body = encoded[payload] = _json.encode(render(values, segments, public))
                parts.append(key + body)
        return offers.join(parts)

    def _eligible(self, table: str, created: bool) -> list[_Candidate]:
        """The sections a request on ``table`` can qualify for, with what each must
        pass; worked out once per (table, created)."""
        found = self._candidates.get((table, created))
        if found is None:
            found = []
            for section in self.sections:
                possible, test = section.test_for(table, created)
                if possible:
                    payload = self._payloads.setdefault(section.payload_key, len(self._payloads))
                    key = _json.encode(section.name) + b":"
                    found.append((key, test, payload, section.render))
            if len(self._candidates) < _MAX_CANDIDATES:  # bounded: tables come from requests
                self._candidates[(table, created)] = found
        return found

    def explain(
        self,
        profile: Profile,
        facts: Facts,
        table: str,
        event: Mapping[str, Any],
        created: bool,
        now_ms: int,
    ) -> list[Trace]:
        values = self.values(profile, facts, now_ms)
        ctx = Context(event, values, facts.segments, now_ms)
        return [s.explain(ctx, table, created) for s in self.sections]


def _feeds(attribute: Attribute, table: str) -> bool:
    return attribute.tables is None or table in attribute.tables


def _refs(node: Node | None) -> list[str]:
    from tdedge.realtime.criteria import All, Any_, Leaf, Not

    if node is None:
        return []
    if isinstance(node, All | Any_):
        return [r for n in node.items for r in _refs(n)]
    if isinstance(node, Not):
        return _refs(node.item)
    if isinstance(node, Leaf) and node.kind == "attribute":
        return [node.name]
    return []


# Compilation.
def compile_service(spec: ServiceSpec, path: Path, report: Report) -> Service | None:
    """The runnable service, or None after reporting every problem found."""
    problems: list[tuple[Path, str]] = []

    def bad(where: Path, message: str) -> None:
        problems.append((where, message))
        report(where, message)

    if not SERVICE_NAME.fullmatch(spec.name):
        bad((*path, "name"), "a service name is 1 to 64 letters, digits, _ or -")
    if not P13N_NAME.fullmatch(spec.database):
        bad((*path, "database"), "database names here are 3 to 128 of a-z, 0-9 and _")
    tables: set[str] = set()
    for i, table in enumerate(spec.event_tables):
        if not P13N_NAME.fullmatch(table):
            bad((*path, "event_tables", i), "table names here are 3 to 128 of a-z, 0-9 and _")
        elif table in tables:
            bad((*path, "event_tables", i), f"table {table!r} is listed twice")
        tables.add(table)
    keys = _key_rules(spec, path, bad)
    attributes = _attributes(spec, tables, path, bad)
    refs = {a.name for a in attributes}
    for a in attributes:
        refs.update(f"{a.name}.{s}" for s in a.subs)
    segment_ids: list[str] = []
    sources: list[BatchSource] = []
    for i, seg in enumerate(spec.segments):
        sid = str(seg.id)
        where = (*path, "segments", i)
        if sid in segment_ids:
            bad((*where, "id"), f"segment id {sid!r} is used twice")
        segment_ids.append(sid)
        if not seg.sql.strip():
            bad((*where, "sql"), "a segment needs a SQL query")
        refresh = _duration(seg.refresh, (*where, "refresh"), bad)
        sources.append(BatchSource("segment", sid, seg.sql, refresh or 3_600_000))
    for i, attr in enumerate(spec.attributes):
        if isinstance(attr, ImportedSpec) and attr.sql is not None:
            refresh = _duration(attr.refresh, (*path, "attributes", i, "refresh"), bad)
            sources.append(BatchSource("attribute", attr.name, attr.sql, refresh or 3_600_000))
    scope = Scope(attributes=refs, segments=segment_ids)
    sections = _sections(spec, scope, tables, attributes, path, bad)
    lookups = _lookups(spec.lookups, keys, scope, attributes, path, bad)
    if problems:
        return None
    return Service(
        spec.name,
        spec.database,
        frozenset(tables),
        keys,
        attributes,
        sections,
        sources,
        frozenset(o.rstrip("/") for o in spec.allowed_origins),
        lookups,
    )


def _key_rules(spec: ServiceSpec, path: Path, bad: Report) -> list[KeyRule]:
    rules: list[KeyRule] = []
    for i, item in enumerate(spec.key_columns):
        where = (*path, "key_columns", i)
        column = item if isinstance(item, str) else item.name
        valid: re.Pattern[str] | None = None
        invalid: frozenset[str] = frozenset()
        if isinstance(item, KeyColumn):
            invalid = frozenset(item.invalid_texts)
            if item.valid_regexp is not None:
                try:
                    valid = re.compile(item.valid_regexp)
                except re.error as e:
                    bad((*where, "valid_regexp"), f"invalid regular expression: {e}")
        if not COLUMN.fullmatch(column):
            bad(where, "a key column name is letters, digits and _")
        elif any(r.column == column for r in rules):
            bad(where, f"key column {column!r} is listed twice")
        rules.append(KeyRule(column, valid, invalid))
    return rules


def _attributes(spec: ServiceSpec, tables: set[str], path: Path, bad: Report) -> list[Attribute]:
    out: list[Attribute] = []
    # Identical filters compile to one node, which the update plans test once per event.
    filters: dict[str, Node] = {}
    if len(spec.attributes) > MAX_ATTRIBUTES:
        bad((*path, "attributes"), f"at most {MAX_ATTRIBUTES} attributes per service")
    names: set[str] = set()
    for i, a in enumerate(spec.attributes):
        where = (*path, "attributes", i)
        if not COLUMN.fullmatch(a.name):
            bad((*where, "name"), "an attribute name is letters, digits and _")
        elif a.name in names:
            bad((*where, "name"), f"attribute {a.name!r} is defined twice")
        names.add(a.name)
        if isinstance(a, ImportedSpec):
            out.append(ImportedAttribute(a.name, sensitive=a.sensitive))
            continue
        only: frozenset[str] | None = None
        if a.tables is not None:
            for j, t in enumerate(a.tables):
                if t not in tables:
                    bad((*where, "tables", j), f"{t!r} is not one of the service's event_tables")
            only = frozenset(a.tables)
        flt = filters.get(repr(a.filter))
        if flt is None:  # a filter that fails is compiled again, to report it here too
            flt = _criteria(a.filter, EVENT_ONLY, (*where, "filter"), bad)
            if flt is not None:
                filters[repr(a.filter)] = flt
        common: dict[str, Any] = {"tables": only, "filter": flt, "sensitive": a.sensitive}
        if isinstance(a, SingleSpec):
            expire = _duration(a.expire, (*where, "expire"), bad)
            out.append(SingleAttribute(a.name, a.column, expire, **common))
        elif isinstance(a, ListSpec):
            window = _duration(a.window, (*where, "window"), bad)
            out.append(ListAttribute(a.name, a.column, a.max_items, window, a.distinct, **common))
        elif isinstance(a, CounterSpec):
            window = _duration(a.window, (*where, "window"), bad)
            bucket = _duration(a.bucket, (*where, "bucket"), bad)
            if bucket is not None and window is None:
                bad((*where, "bucket"), "bucket is the sub-duration of a window; set window too")
            elif bucket is not None and window is not None and bucket > window:
                bad((*where, "bucket"), "bucket must not be longer than the window")
            if a.increment_column is not None and "increment" in _given(a):
                bad((*where, "increment"), "use increment or increment_column, not both")
            out.append(
                CounterAttribute(a.name, window, bucket, a.increment, a.increment_column, **common)
            )
    return out


def _given(spec: Any) -> set[str]:
    return set(msgspec.to_builtins(spec))


def _sections(
    spec: ServiceSpec,
    scope: Scope,
    tables: set[str],
    attributes: list[Attribute],
    path: Path,
    bad: Report,
) -> list[Section]:
    by_name = {a.name: a for a in attributes}
    out: list[Section] = []
    names: set[str] = set()
    for i, p in enumerate(spec.personalizations):
        where = (*path, "personalizations", i)
        if p.section in names:
            bad((*where, "section"), f"section {p.section!r} is defined twice")
        names.add(p.section)
        criteria = _criteria(p.criteria, scope, (*where, "criteria"), bad)
        key_tables: frozenset[str] | None = None
        key_filter: Node | None = None
        if p.key_event is not None:
            if p.key_event.tables is not None:
                for j, t in enumerate(p.key_event.tables):
                    if t not in tables:
                        bad((*where, "key_event", "tables", j), f"{t!r} is not an event table")
                key_tables = frozenset(p.key_event.tables)
            key_filter = _criteria(
                p.key_event.filter, EVENT_ONLY, (*where, "key_event", "filter"), bad
            )
        outputs: list[Output] = []
        for out_name, ref in p.payload.attributes.items():
            if ref not in scope.attributes:
                bad((*where, "payload", "attributes", out_name), f"no attribute {ref!r}")
                continue
            attribute = by_name.get(ref.partition(".")[0])
            outputs.append(Output(out_name, ref, attribute is not None and attribute.sensitive))
        clash = set(p.payload.attributes) & set(p.payload.strings)
        if clash:
            bad((*where, "payload", "strings"), f"output names used twice: {sorted(clash)}")
        segments = [str(s) for s in p.payload.batch_segments]
        for j, s in enumerate(segments):
            if s not in scope.segments:
                bad((*where, "payload", "batch_segments", j), f"no segment with id {s!r}")
        out.append(
            Section(
                p.section,
                criteria,
                key_tables,
                key_filter,
                p.accept_unknown,
                outputs,
                segments,
                dict(p.payload.strings),
            )
        )
    return out


def _lookups(
    specs: list[LookupSpec],
    keys: list[KeyRule],
    scope: Scope,
    attributes: list[Attribute],
    path: Path,
    bad: Report,
) -> dict[str, Lookup]:
    rules = {r.column: r for r in keys}
    sensitive = {a.name for a in attributes if a.sensitive}
    out: dict[str, Lookup] = {}
    names: set[str] = set()
    for i, spec in enumerate(specs):
        where = (*path, "lookups", i)
        if not SERVICE_NAME.fullmatch(spec.name):
            bad((*where, "name"), "a lookup name is 1 to 64 letters, digits, _ or -")
        elif spec.name in names:
            bad((*where, "name"), f"lookup {spec.name!r} is defined twice")
        names.add(spec.name)
        rule = rules.get(spec.key_column)
        if rule is None:
            bad(
                (*where, "key_column"),
                f"{spec.key_column!r} is not one of the service's key_columns ({', '.join(rules)})",
            )
        segments = list(dict.fromkeys(str(s) for s in spec.segments))
        for j, segment in enumerate(spec.segments):
            if str(segment) not in scope.segments:
                bad((*where, "segments", j), f"no segment with id {str(segment)!r}")
        for j, ref in enumerate(spec.attributes):
            if ref not in scope.attributes:
                bad((*where, "attributes", j), f"no attribute {ref!r}")
            elif ref.partition(".")[0] in sensitive:
                bad(
                    (*where, "attributes", j),
                    f"{ref!r} is sensitive: lookup tokens sit in web pages and never reveal it",
                )
        if rule is not None:
            out[spec.name] = Lookup(
                spec.name, rule, tuple(segments), tuple(dict.fromkeys(spec.attributes))
            )
    return out


def _criteria(raw: Any, scope: Scope, where: Path, bad: Report) -> Node | None:
    if raw is None:
        return None
    try:
        return compile_criteria(raw, scope)
    except CriteriaError as e:
        bad((*where, *e.path), e.message)
        return None


def _duration(value: Any, where: Path, bad: Report) -> int | None:
    if value is None:
        return None
    try:
        return durations.parse_ms(value)
    except ValueError as e:
        bad(where, str(e))
        return None
