"""Extract the examples of Trino's function documentation into the conformance data file.

Trino documents most functions with examples and their results, in code blocks of
docs/src/main/sphinx/functions/*.md, in two shapes::

    SELECT slice(ARRAY[1, 2, 3], 2, 2); -- [2, 3]

    SELECT url_extract_protocol('ftp://path/file');
    -- ftp

Usage (from a Trino checkout)::

    python scripts/trino_examples.py TRINO/docs/src/main/sphinx/functions > examples.jsonl

Each output line is ``{"family", "sql", "expected"}``; ``family`` is the page's name.
tests/data/trino_examples.jsonl is this output for the families TD users reach for,
plus TD's own UDF examples (family ``td``) written by hand from TD's documentation.
A query whose result is a table, or spans no ``--`` line, is skipped.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

FAMILIES = (
    "aggregate",
    "array",
    "conditional",
    "conversion",
    "datetime",
    "json",
    "map",
    "math",
    "regexp",
    "string",
    "url",
    "window",
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE = re.compile(r"^(?P<sql>SELECT\b.*?);\s*--\s?(?P<expected>.*)$", re.I)


def code_blocks(text: str) -> Iterator[list[str]]:
    block: list[str] | None = None
    for line in text.splitlines():
        if _FENCE.match(line):
            if block is None:
                block = []
            else:
                yield block
                block = None
        elif block is not None:
            block.append(line.strip())


def examples(text: str) -> Iterator[tuple[str, str]]:
    """``(sql, expected)`` pairs of one page."""
    for block in code_blocks(text):
        statement: list[str] = []
        i = 0
        while i < len(block):
            line = block[i]
            i += 1
            inline = _INLINE.match(" ".join([*statement, line]).strip())
            if inline and not statement:
                yield inline["sql"].strip(), inline["expected"].strip()
                continue
            if not statement and not line.upper().startswith("SELECT"):
                continue
            statement.append(line)
            if not line.endswith(";"):
                continue
            # Joined by newlines: a -- comment inside the statement ends at its line.
            sql = "\n".join(statement)[:-1].strip()
            statement = []
            results: list[str] = []
            while i < len(block) and block[i].startswith("--"):
                results.append(block[i][2:].strip())
                i += 1
            if results:
                yield sql, "\n".join(results)


def main(folder: str) -> None:
    for family in FAMILIES:
        page = Path(folder) / f"{family}.md"
        if not page.is_file():
            continue
        for sql, expected in examples(page.read_text(encoding="utf-8")):
            line = {"family": family, "sql": sql, "expected": expected}
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
