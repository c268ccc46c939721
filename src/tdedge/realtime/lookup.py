"""Profile lookups: what a lookup token may reveal, and its entry in the CDP door's answer.

td-js-sdk's ``fetchUserSegments`` (and the mobile SDKs' ``fetchUserSegments``) ask
``GET /cdp/lookup/collect/segments?version=2&token=T1,T2&key.<column>=<value>``;
Treasure Data calls the tokens "Profiles API tokens": each looks people up by one key
column and reveals some segments and attributes of the person found. Here a service's
``lookups:`` in the p13n configuration say that, and ``tdedge p13n tokens create
SERVICE --lookup NAME`` makes tokens for one of them.

One token's entry in the answer has Treasure Data's shape::

    {"key": {"<column>": "<value>"}, "values": ["<segment id>", …],
     "attributes": {"<attribute>": value, …}, "audienceId": "<service instance id>"}

There is no entry when nothing tdedge knows holds the key — no real-time profile and no
batch fact — nor, when the lookup lists segments, for a person in none of them: as
Treasure Data documents, a token answers for the profiles of its segments only.
Attributes are the real-time profile's (or imported) values at ``now_ms``; sensitive
attributes are refused when the configuration is applied, since lookup tokens sit in
web pages. Pure: the door reads the stores and passes in what it found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tdedge.realtime.identity import KeyRule
from tdedge.realtime.profile import Profile

if TYPE_CHECKING:  # service.py compiles lookups, so it imports this module
    from tdedge.realtime.service import Facts, Service

# A key column looked up by the browser's global id: its value comes from tdedge's
# global-id cookie, never from the query (Treasure Data reads its cookie the same way),
# so a page can look up only the visitor who is looking at it.
GLOBAL_ID_COLUMN = "td_global_id"


class Lookup:
    """One compiled ``lookups:`` entry of a service."""

    __slots__ = ("attributes", "name", "rule", "segments")

    def __init__(
        self, name: str, rule: KeyRule, segments: tuple[str, ...], attributes: tuple[str, ...]
    ) -> None:
        self.name = name
        self.rule = rule  # the key column, and what a valid value of it is
        self.segments = segments
        self.attributes = attributes

    @property
    def column(self) -> str:
        return self.rule.column

    def key_value(self, raw: str) -> str | None:
        """The value as a profile key holds it, or None when it cannot be one (blank,
        too long, refused by the column's ``valid_regexp`` or ``invalid_texts``)."""
        return self.rule.value({self.rule.column: raw})


def entry(
    service: Service,
    lookup: Lookup,
    value: str,
    profile: Profile | None,
    facts: Facts,
    audience_id: str,
    now_ms: int,
) -> dict[str, Any] | None:
    """The answer's entry for a person whose key is ``value`` (None: not found).

    ``profile`` is the real-time profile the key leads to (tidied by the caller, or None)
    and ``facts`` the batch facts of its keys (or of the key alone without a profile).
    """
    if profile is None and not facts.segments and not facts.imported:
        return None
    segments = [s for s in lookup.segments if s in facts.segments]
    if lookup.segments and not segments:
        return None
    person = profile if profile is not None else Profile(id=0, created_ms=now_ms)
    attributes = service.values(person, facts, now_ms, lookup.attributes)
    return {
        "key": {lookup.column: value},
        "values": segments,
        "attributes": attributes,
        "audienceId": audience_id,
    }
