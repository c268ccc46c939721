"""Markers by layer, so one layer runs alone: ``-m unit``, ``-m e2e``, ``-m browser``.

A test's layer is where it lives: tests/unit are pure units and contract suites (no
server), tests/e2e start real servers, and the browser test drives Chromium.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
BROWSER_TESTS = {"test_browser.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(HERE)
        if path.parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
        elif path.name in BROWSER_TESTS:
            item.add_marker(pytest.mark.browser)
        else:
            item.add_marker(pytest.mark.e2e)
