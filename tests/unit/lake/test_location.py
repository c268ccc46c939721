"""Where the lake lives, as the settings and the AWS variables say."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from tdedge.cli import main
from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location


def test_the_default_is_the_data_dirs_sqlite_file_and_folder(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    assert s.lake_embedded
    assert location.catalog_source(s) == f"ducklake:sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}"
    assert location.data_path(s) == f"{tmp_path / 'lake' / 'data'}/"
    assert location.extensions(s) == ("parquet", "json", "sqlite_scanner", "ducklake")


def test_postgresql_and_s3(tmp_path: Path) -> None:
    s = Settings(
        data_dir=str(tmp_path),
        lake_catalog="postgresql+psycopg://u:pw@db.example:5432/lake",
        lake_data="s3://bucket/prefix",
    )
    assert not s.lake_embedded
    assert location.catalog_source(s) == "ducklake:postgres:postgresql://u:pw@db.example:5432/lake"
    # Messages never carry the password.
    assert location.catalog_name(s) == "postgresql://u@db.example:5432/lake"
    assert location.data_path(s) == "s3://bucket/prefix/"
    assert "postgres_scanner" in location.extensions(s)
    assert "httpfs" in location.extensions(s)
    # Connections that run users' SQL never get an extension that opens databases.
    assert location.user_extensions(s) == ("parquet", "json", "httpfs", "ducklake")


def test_another_sqlite_file_and_folder(tmp_path: Path) -> None:
    s = Settings(
        data_dir=str(tmp_path / "d"),
        lake_catalog=f"sqlite:///{tmp_path}/c/cat.sqlite",
        lake_data=str(tmp_path / "files"),
    )
    assert s.lake_catalog_file == tmp_path / "c" / "cat.sqlite"
    assert s.lake_locks == tmp_path / "c"
    assert location.data_path(s) == f"{tmp_path / 'files'}/"


def test_the_s3_secret_comes_from_the_aws_variables() -> None:
    sql = location.s3_secret(
        {
            "AWS_ACCESS_KEY_ID": "AK",
            "AWS_SECRET_ACCESS_KEY": "SK",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
        }
    )
    assert "KEY_ID 'AK'" in sql and "SECRET 'SK'" in sql and "REGION 'eu-west-1'" in sql
    assert "ENDPOINT '127.0.0.1:8333'" in sql and "URL_STYLE 'path'" in sql
    assert "USE_SSL false" in sql
    tls = location.s3_secret({"AWS_ENDPOINT_URL": "https://s3.example:9000"})
    assert "USE_SSL true" in tls and "KEY_ID" not in tls and "REGION 'us-east-1'" in tls
    # AWS itself: no endpoint, DuckDB's default addressing.
    assert "ENDPOINT" not in location.s3_secret({})


@pytest.mark.parametrize(
    "env",
    [{"AWS_ACCESS_KEY_ID": "AK"}, {"AWS_ENDPOINT_URL": "ftp://x"}],
)
def test_incomplete_aws_variables_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(LakeError):
        location.s3_secret(env)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--lake-catalog", "mysql://x/y"), ("--lake-data", "gs://b/p/"), ("--lake-data", "s3://")],
)
def test_the_cli_refuses_a_lake_it_cannot_open(option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["query", option, value, "SELECT 1"])
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_a_shared_lake_names_journal_shards_after_the_node_but_not_a_shared_stream(
    tmp_path: Path,
) -> None:
    catalog = "postgresql+psycopg://u:pw@db.example:5432/lake"
    one = Settings(data_dir=str(tmp_path / "one"), lake_catalog=catalog)
    other = Settings(data_dir=str(tmp_path / "other"), lake_catalog=catalog)
    # Each node's own SQLite journal: shards named alike, so told apart by the node.
    assert location.journal_prefix(one) != location.journal_prefix(other)
    assert location.journal_prefix(one).endswith("/")
    # One JetStream stream every node reads: a partition is one shard whoever loads it.
    streams = [msgspec.structs.replace(s, journal="nats://h1:4222") for s in (one, other)]
    assert [location.journal_prefix(s) for s in streams] == ["", ""]
