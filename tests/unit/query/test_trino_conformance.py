"""Trino's documented examples, run through the translator and DuckDB.

tests/data/trino_examples.jsonl holds the examples of Trino's function documentation
(scripts/trino_examples.py extracts them) and TD's UDF examples. Each must give its
documented result, except those listed in tests/data/trino_known_differences.json
with the reason; those are strict xfails, so an example that starts to pass (or one
that stops passing) shows. ``python tests/unit/query/test_trino_conformance.py`` prints the
pass rate by family, as docs/presto.md reports it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tdedge.query.functions import register
from tdedge.query.translate import Context, TranslationError, translate

DATA = Path(__file__).parents[2] / "data"
EXAMPLES: list[dict[str, str]] = [
    json.loads(line)
    for line in (DATA / "trino_examples.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
]
KNOWN: dict[str, str] = json.loads((DATA / "trino_known_differences.json").read_text("utf-8"))
# 2013-01-02 00:00:00 UTC: TD_SCHEDULED_TIME() of the TD examples.
SCHEDULED = 1357084800


def render(value: Any) -> str:
    """A value as Trino's CLI prints it."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
        return text + (" UTC" if value.tzinfo is not None else "")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float | decimal.Decimal | int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(render(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render(k)}={render(v)}" for k, v in value.items()) + "}"
    return str(value)


def normal(text: str) -> str:
    """What two spellings of one result share: quotes, ROW, JSON and map arrows go."""
    text = re.sub(r"\s*\((the double quote is gone|invalid JSON)\)$", "", text.strip())
    text = text.replace("JSON '", "'").replace("'", "").replace("ROW(", "(")
    text = re.sub(r"\s*(->|=)\s*", "=", text)
    text = re.sub(r"\bnull\b", "NULL", text, flags=re.I)
    if re.fullmatch(r"\{[^{}\[\]()]*\}", text):
        # A map's entries have no order.
        text = "{" + ", ".join(sorted(text[1:-1].split(", "))) + "}"
    return text


def run(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    try:
        # An empty schema still types the query: integer division stays integral.
        translated = translate(sql, Context(SCHEDULED), None, {})
        rows = con.execute(translated).fetchall()
    except (TranslationError, duckdb.Error) as e:
        return f"ERROR: {e}"
    return "\n".join(" | ".join(render(v) for v in row) for row in rows)


def passes(con: duckdb.DuckDBPyConnection, example: dict[str, str]) -> bool:
    got = run(con, example["sql"])
    expected = example["expected"]
    if expected.startswith("ERROR: "):
        return got.startswith("ERROR: ") and expected[7:] in got
    return normal(got) == normal(expected)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    return _connection()


def _connection() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")  # as query/session.py sets it
    register(c)
    return c


def _cases() -> list[Any]:
    cases = []
    for example in EXAMPLES:
        reason = KNOWN.get(example["sql"])
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        cases.append(pytest.param(example, id=example["sql"][:80], marks=marks))
    return cases


@pytest.mark.parametrize("example", _cases())
def test_documented_example(con: duckdb.DuckDBPyConnection, example: dict[str, str]) -> None:
    got = run(con, example["sql"])
    assert passes(con, example), f"got {got!r}, documented {example['expected']!r}"


def test_every_known_difference_is_an_example() -> None:
    sqls = {e["sql"] for e in EXAMPLES}
    assert [s for s in KNOWN if s not in sqls] == []


if __name__ == "__main__":
    connection = _connection()
    total: Counter[str] = Counter()
    good: Counter[str] = Counter()
    for example in EXAMPLES:
        total[example["family"]] += 1
        ok = passes(connection, example)
        good[example["family"]] += ok
        if "-v" in sys.argv and not ok:
            print(f"FAIL {example['sql']}\n  got {run(connection, example['sql'])!r}")
    print("| family | examples | pass | rate |\n| --- | ---: | ---: | ---: |")
    for family in sorted(total):
        rate = 100 * good[family] / total[family]
        print(f"| {family} | {total[family]} | {good[family]} | {rate:.0f}% |")
    rate = 100 * sum(good.values()) / sum(total.values())
    print(f"| all | {sum(total.values())} | {sum(good.values())} | {rate:.0f}% |")
