"""scripts/trino_examples.py reads both shapes of Trino's documented examples."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).parents[3] / "scripts" / "trino_examples.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trino_examples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGE = """
:::{function} url_extract_protocol(url) -> varchar
```
SELECT url_extract_protocol('ftp://path/file');
-- ftp

SELECT regexp_count('1a 2b 14m', '\\s*[a-z]+\\s*'); -- 3
```
Not an example: `SELECT 1;`
```text
species    | count
-----------+-------
```
```
SELECT reduce(ARRAY[5, 20], 0,
              -- the state is the sum
              (s, x) -> s + x,
              s -> s);
-- 25
SELECT current_timezone()
-- America/New_York
```
"""


def test_examples_of_both_shapes_are_extracted() -> None:
    found = list(_script().examples(PAGE))
    assert found == [
        ("SELECT url_extract_protocol('ftp://path/file')", "ftp"),
        ("SELECT regexp_count('1a 2b 14m', '\\s*[a-z]+\\s*')", "3"),
        (
            "SELECT reduce(ARRAY[5, 20], 0,\n-- the state is the sum\n(s, x) -> s + x,\ns -> s)",
            "25",
        ),
    ]
