"""``serve`` option for where the real-time profiles live (realtime/redis.py)."""

from __future__ import annotations

from typing import Any

import click

from tdedge.cli.common import F, stacked

_SCHEMES = ("redis://", "rediss://", "unix://")


def _profiles_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a URL the store cannot use at start, not at the first decision."""
    if value and not value.startswith(_SCHEMES):
        raise click.BadParameter(f"{value!r}: expected redis://host:port/db")
    return value


def profile_options(f: F) -> F:
    """Add --profiles."""
    options = [
        click.option(
            "--profiles",
            default="",
            show_default=False,
            metavar="URL",
            callback=_profiles_url,
            help="Real-time profiles in Redis, shared by every node: redis://host:port/db. "
            "Default: the SQLite file in the data dir (one node).",
        ),
    ]
    return stacked(f, options)


def profile_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields for the values of ``profile_options``."""
    return {"profiles": values["profiles"]}
