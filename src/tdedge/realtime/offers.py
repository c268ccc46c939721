"""Sections and their payloads: what a qualifying profile gets back.

A section (Treasure Data's "personalization section") has entry criteria and a payload;
its name is the offer's key. The answer's shape is the documented one::

    {"offers": {"<section>": {"attributes": {"<output>": value},
                              "batch_segments": [{"id": "<segment id>"}]}}}

Fixed ``strings`` are returned among the attributes, so the shape stays exactly that.
``batch_segments`` lists those of the payload's segments the profile belongs to. An
answer is at most 10 KB: sections that do not fit are left out, last first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from tdedge.realtime.criteria import Context, Node, Test, Trace

MAX_RESPONSE_BYTES = 10 * 1024
_json = msgspec.json.Encoder()
EMPTY = b'{"offers":{}}'
_HEAD, _TAIL = EMPTY[:-2], EMPTY[-2:]


class Output(msgspec.Struct, frozen=True):
    name: str  # the output name in the answer
    ref: str  # attribute or attribute.sub
    sensitive: bool


Render = Callable[[Mapping[str, Any], Collection[str], bool], dict[str, Any]]


class Section:
    __slots__ = (
        "accept_unknown",
        "criteria",
        "key_filter",
        "key_tables",
        "name",
        "outputs",
        "payload_key",
        "render",
        "segments",
        "strings",
    )

    def __init__(
        self,
        name: str,
        criteria: Node | None,
        key_tables: frozenset[str] | None,
        key_filter: Node | None,
        accept_unknown: bool,
        outputs: list[Output],
        segments: list[str],
        strings: dict[str, str],
    ) -> None:
        self.name = name
        self.criteria = criteria
        self.key_tables = key_tables
        self.key_filter = key_filter
        self.accept_unknown = accept_unknown
        self.outputs = outputs
        self.segments = segments
        self.strings = strings
        # Sections with equal payloads render equal offers: one render serves them all.
        self.payload_key = (tuple(outputs), tuple(segments), tuple(strings.items()))
        self.render = self._render()

    def test_for(self, table: str, created: bool) -> tuple[bool, Test | None]:
        """Whether a request on ``table`` (its profile new or not) can qualify, and the
        test its context must then pass (None: none). Decided once per (table, created)."""
        if created and not self.accept_unknown:
            return False, None
        if self.key_tables is not None and table not in self.key_tables:
            return False, None
        tests = [n.test for n in (self.key_filter, self.criteria) if n is not None]
        if not tests:
            return True, None
        if len(tests) == 1:
            return True, tests[0]
        key_test, criteria = tests
        return True, lambda ctx: key_test(ctx) and criteria(ctx)

    def qualifies(self, ctx: Context, table: str, created: bool) -> bool:
        possible, test = self.test_for(table, created)
        return possible and (test is None or test(ctx))

    def _render(self) -> Render:
        every = tuple((o.name, o.ref) for o in self.outputs)
        public_only = tuple((o.name, o.ref) for o in self.outputs if not o.sensitive)
        strings, ids = dict(self.strings), tuple(self.segments)

        def render(
            values: Mapping[str, Any], segments: Collection[str], public: bool
        ) -> dict[str, Any]:
            get = values.get
            attributes = {name: get(ref) for name, ref in (public_only if public else every)}
            if strings:
                attributes.update(strings)
            return {
                "attributes": attributes,
                "batch_segments": [{"id": s} for s in ids if s in segments] if ids else [],
            }

        return render

    def explain(self, ctx: Context, table: str, created: bool) -> Trace:
        steps: list[Trace] = []
        if not self.accept_unknown:
            steps.append(
                Trace(
                    not created,
                    "profile known before this event",
                    actual="new" if created else "known",
                )
            )
        if self.key_tables is not None:
            steps.append(
                Trace(
                    table in self.key_tables,
                    f"key event table in {sorted(self.key_tables)}",
                    actual=table,
                )
            )
        if self.key_filter is not None:
            steps.append(
                Trace(
                    self.key_filter.test(ctx),
                    "key event filter",
                    children=[self.key_filter.explain(ctx)],
                )
            )
        if self.criteria is not None:
            steps.append(self.criteria.explain(ctx))
        passed = all(s.passed for s in steps)
        return Trace(passed, f"section {self.name}", children=steps)

    def offer(
        self, values: Mapping[str, Any], segments: Collection[str], public: bool
    ) -> dict[str, Any]:
        return self.render(values, segments, public)


def answer(offers: dict[str, dict[str, Any]]) -> bytes:
    """The response body, at most MAX_RESPONSE_BYTES: the last sections give way first."""
    return join([_json.encode(name) + b":" + _json.encode(o) for name, o in offers.items()])


def join(parts: list[bytes]) -> bytes:
    """The response body from encoded ``"section":{offer}`` parts, at most
    MAX_RESPONSE_BYTES: the last sections give way first."""
    if not parts:
        return EMPTY
    size = len(EMPTY) + sum(map(len, parts)) + len(parts) - 1
    while size > MAX_RESPONSE_BYTES and parts:
        size -= len(parts.pop()) + 1
    return _HEAD + b",".join(parts) + _TAIL
