"""Identity keys: which values of an event identify a person, and how keys stitch.

Stitching rule (Treasure Data's): when no key of an event is known, the event starts a
new profile; a key seen for the first time joins the profile its sibling keys point at;
keys that point at several profiles merge them, and the oldest profile survives.
Pure functions; the profile store applies the plan inside its transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tdedge.realtime.profile import key_of

# Longer values are not identifiers (and would bloat the key index).
MAX_KEY_CHARS = 256


class KeyRule:
    __slots__ = ("column", "invalid", "valid")

    def __init__(
        self,
        column: str,
        valid: re.Pattern[str] | None = None,
        invalid: frozenset[str] = frozenset(),
    ) -> None:
        self.column = column
        self.valid = valid
        self.invalid = invalid

    def value(self, event: Mapping[str, Any]) -> str | None:
        raw = event.get(self.column)
        if isinstance(raw, bool) or raw is None:
            return None
        if isinstance(raw, int):
            text = str(raw)
        elif isinstance(raw, str):
            text = raw.strip()
        else:
            return None
        if not text or len(text) > MAX_KEY_CHARS or text in self.invalid:
            return None
        if self.valid is not None and self.valid.fullmatch(text) is None:
            return None
        return text


def event_keys(event: Mapping[str, Any], rules: Sequence[KeyRule]) -> list[str]:
    """The event's identity keys, ``column=value``, in key-column order."""
    keys = []
    for rule in rules:
        value = rule.value(event)
        if value is not None:
            keys.append(key_of(rule.column, value))
    return keys


class Plan:
    """What stitching does with the profiles the event's keys point at."""

    __slots__ = ("merged", "new_keys", "survivor")

    def __init__(self, survivor: int | None, merged: list[int], new_keys: list[str]) -> None:
        self.survivor = survivor  # None: start a new profile
        self.merged = merged  # profiles folded into the survivor, then gone
        self.new_keys = new_keys  # keys no profile knew


def plan(keys: Sequence[str], found: Mapping[str, int]) -> Plan:
    """``found`` maps the known keys to their profile ids; lower ids are older."""
    ids = sorted(set(found.values()))
    new_keys = [k for k in keys if k not in found]
    if not ids:
        return Plan(None, [], new_keys)
    return Plan(ids[0], ids[1:], new_keys)
