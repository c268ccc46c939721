"""Whether a regexp's capturing group can take no part in a match.

Presto gives NULL for such a group (``regexp_extract('abc', '(z)?c', 1)``); DuckDB
(RE2) gives ``''``, which is also what a group that matched the empty string gives.
From the pattern's structure: a group outside every alternation and optional
repetition takes part in each match, so ``''`` is its answer; a group that cannot
match the empty string took no part exactly when DuckDB gives ``''``. Only a group
that can do both is ambiguous. The pattern is read with Python's own regexp parser
(its syntax is close to Java's and RE2's); one it cannot read counts as ambiguous.
"""

from __future__ import annotations

import importlib
import re
from enum import Enum
from typing import Any

# The parser of the re module (not a public API; its tree is stable across 3.11+).
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")


class Group(Enum):
    ALWAYS = "always"  # takes part in every match: DuckDB's '' is Presto's answer
    NONEMPTY = "nonempty"  # may be absent but never empty: '' means absent (NULL)
    AMBIGUOUS = "ambiguous"  # may be absent and may be empty: '' cannot be read


def group_kind(pattern: str, group: int) -> Group:
    if group == 0:
        return Group.ALWAYS
    try:
        tree = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):  # what Python's parser refuses
        return Group.AMBIGUOUS
    found = _find(tree, group, optional=False)
    if found is None:
        return Group.AMBIGUOUS
    optional, min_width = found
    if not optional:
        return Group.ALWAYS
    return Group.NONEMPTY if min_width > 0 else Group.AMBIGUOUS


def _find(tree: Any, group: int, optional: bool) -> tuple[bool, int] | None:
    """(whether ``group`` may be skipped, its minimum width), or None if absent."""
    c = _constants
    for op, av in tree:
        parts: list[tuple[Any, bool]] = []
        if op is c.SUBPATTERN:
            number, _, _, sub = av
            if number == group:
                return optional, int(sub.getwidth()[0])
            parts = [(sub, optional)]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, _, sub = av
            parts = [(sub, optional or low == 0)]
        elif op is c.BRANCH:
            parts = [(sub, True) for sub in av[1]]
        elif op is c.ATOMIC_GROUP:
            parts = [(av, optional)]
        elif op is c.GROUPREF_EXISTS:
            parts = [(sub, True) for sub in av[1:] if sub is not None]
        elif op in (c.ASSERT, c.ASSERT_NOT):
            parts = [(av[1], True)]
        for sub, skipped in parts:
            hit = _find(sub, group, skipped)
            if hit is not None:
                return hit
    return None
