"""``serve`` options for Bulk Import sessions (api/bulk_sessions.py)."""

from __future__ import annotations

from typing import Any

import click

from tdedge.cli.common import F, stacked
from tdedge.config import Settings

_DEFAULTS = Settings()


def bulk_options(f: F) -> F:
    """Add --bulk-part-max-bytes and --bulk-account-max-bytes."""
    options = [
        click.option(
            "--bulk-part-max-bytes",
            type=click.IntRange(1),
            default=_DEFAULTS.bulk_part_max_bytes,
            show_default=True,
            help="Largest Bulk Import part (one upload_part body); larger ones get 413.",
        ),
        click.option(
            "--bulk-account-max-bytes",
            type=click.IntRange(1),
            default=_DEFAULTS.bulk_account_max_bytes,
            show_default=True,
            help="Bytes of Bulk Import parts one account's sessions may hold on disk until "
            "they are deleted; past it uploads are refused (bulk_storage_limit).",
        ),
    ]
    return stacked(f, options)


def bulk_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields for the values of ``bulk_options``."""
    return {
        "bulk_part_max_bytes": values["bulk_part_max_bytes"],
        "bulk_account_max_bytes": values["bulk_account_max_bytes"],
    }
