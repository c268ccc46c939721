"""The servers the contract suites run their backends on, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.Postgres]:
    if not postgres.available():
        pytest.fail("PostgreSQL 15 is not installed: run scripts/setup")
    with postgres.server() as pg:
        yield pg
