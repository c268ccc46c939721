"""``serve`` option for where the journal lives (journal/jetstream.py)."""

from __future__ import annotations

from typing import Any

import click

from tdedge.cli.common import F, stacked


def _journal_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a URL the journal cannot use at start, not at the first record."""
    servers = [part.strip() for part in value.split(",") if part.strip()]
    if value and not all(s.startswith(("nats://", "tls://")) for s in servers):
        raise click.BadParameter(f"{value!r}: expected nats://host:4222[,nats://host:4222...]")
    return ",".join(servers)


def journal_options(f: F) -> F:
    """Add --journal."""
    options = [
        click.option(
            "--journal",
            default="",
            show_default=False,
            metavar="URLS",
            callback=_journal_url,
            help="A replicated journal on NATS JetStream, shared by every node: "
            "nats://h1:4222,nats://h2:4222,nats://h3:4222. "
            "Default: SQLite files in the data dir (one node).",
        ),
    ]
    return stacked(f, options)


def journal_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields for the values of ``journal_options``."""
    return {"journal": values["journal"]}
