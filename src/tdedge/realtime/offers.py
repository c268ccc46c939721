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

from tdedge.realtime.criteria import Context, Node, Trace

MAX_RESPONSE_BYTES = 10 * 1024
_json = msgspec.json.Encoder()
EMPTY = b'{"offers":{}}'


class Output(msgspec.Struct, frozen=True):
    name: str  # the output name in the answer
    ref: str  # attribute or attribute.sub
    sensitive: bool


class Section:
    __slots__ = (
        "accept_unknown",
        "criteria",
        "key_filter",
        "key_tables",
        "name",
        "outputs",
        "segments",
        "strings",
        "test",
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
        self.test = self._compile()

    def _compile(self) -> Callable[[Context, str, bool], bool]:
        """Whether a request qualifies, as one closure (ten sections, every request)."""
        accept_unknown, tables = self.accept_unknown, self.key_tables
        key_test = None if self.key_filter is None else self.key_filter.test
        criteria = None if self.criteria is None else self.criteria.test

        def qualifies(ctx: Context, table: str, created: bool) -> bool:
            if created and not accept_unknown:
                return False
            if tables is not None and table not in tables:
                return False
            if key_test is not None and not key_test(ctx):
                return False
            return criteria is None or criteria(ctx)

        return qualifies

    def qualifies(self, ctx: Context, table: str, created: bool) -> bool:
        return self.test(ctx, table, created)

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
        attributes: dict[str, Any] = {
            o.name: values.get(o.ref) for o in self.outputs if not (public and o.sensitive)
        }
        attributes.update(self.strings)
        return {
            "attributes": attributes,
            "batch_segments": [{"id": s} for s in self.segments if s in segments],
        }


def answer(offers: dict[str, dict[str, Any]]) -> bytes:
    """The response body, at most MAX_RESPONSE_BYTES: the last sections give way first."""
    body = _json.encode({"offers": offers})
    while len(body) > MAX_RESPONSE_BYTES and offers:
        offers.pop(next(reversed(offers)))
        body = _json.encode({"offers": offers})
    return body
