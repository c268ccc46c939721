"""``--lake-catalog`` and ``--lake-data``: where the lake lives (lake/location.py), on
``serve`` and on every command that opens the lake."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from tdedge.cli.common import F, stacked
from tdedge.config import Settings


def _catalog(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    url = value or ""
    if url and not url.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        raise click.BadParameter("a sqlite:///path or postgresql://… URL", ctx, param)
    return url


def _data(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    where = value or ""
    if "://" in where and not where.startswith("s3://"):
        raise click.BadParameter("a folder or an s3://bucket/prefix/ URL", ctx, param)
    if where.startswith("s3://") and len(where.removeprefix("s3://").strip("/")) == 0:
        raise click.BadParameter("s3:// needs a bucket: s3://bucket/prefix/", ctx, param)
    return where


def lake_options(f: F) -> F:
    """Add --lake-catalog and --lake-data."""
    options = [
        click.option(
            "--lake-catalog",
            default=None,
            callback=_catalog,
            metavar="URL",
            help="The lake's DuckLake catalog: postgresql://user@host:5432/db to share "
            "one lake between nodes, or sqlite:///path (default: the SQLite file in the "
            "data dir). Env: TDEDGE_LAKE_CATALOG.",
        ),
        click.option(
            "--lake-data",
            default=None,
            callback=_data,
            metavar="URL",
            help="Where the lake's Parquet files go: s3://bucket/prefix/ (credentials, "
            "region, endpoint from the AWS_* variables) or a folder (default: the data "
            "dir). Env: TDEDGE_LAKE_DATA.",
        ),
    ]
    return stacked(f, options)


def lake_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields for the values of ``lake_options``."""
    return {"lake_catalog": values["lake_catalog"], "lake_data": values["lake_data"]}


def with_lake(settings: Settings, values: dict[str, Any]) -> Settings:
    """``settings`` with the lake the options chose."""
    return msgspec.structs.replace(settings, **lake_settings(values))
