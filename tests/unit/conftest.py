"""Fixtures several unit test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tdedge.realtime.batch import SQLiteBatchStore
from tdedge.realtime.engine import Engine
from tdedge.realtime.sqlite import SQLiteProfileStore


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on fresh profile and batch stores, closed after the test."""
    e = Engine(SQLiteProfileStore(tmp_path / "p.sqlite"), SQLiteBatchStore(tmp_path / "b.sqlite"))
    yield e
    e.store.close()
    e.batch.close()
