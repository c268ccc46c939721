"""``serve`` options for what refused requests may cost (edge/refusals.py, edge/throttle.py)."""

from __future__ import annotations

from typing import Any

import click

from tdedge.cli.common import F, stacked
from tdedge.config import Settings

_DEFAULTS = Settings()


def refusal_options(f: F) -> F:
    """Add --refusals-per-source, --refusal-summary-interval, --refusal-share and
    --refusal-burst."""
    options = [
        click.option(
            "--refusals-per-source",
            type=click.FloatRange(min=0),
            default=_DEFAULTS.refusals_kept_per_s,
            show_default=True,
            help="Refused requests per second each client address may leave as import-error "
            "rows (per worker, after a burst of "
            f"{_DEFAULTS.refusals_kept_burst}); the rest are counted and summarised.",
        ),
        click.option(
            "--refusal-summary-interval",
            type=click.FloatRange(min=0.1),
            default=_DEFAULTS.refusals_summary_interval_s,
            show_default=True,
            help="Seconds between the rows that count, per client address, the refusals not kept.",
        ),
        click.option(
            "--refusal-share",
            type=click.FloatRange(min=0, max=1),
            default=_DEFAULTS.refusal_share,
            show_default=True,
            help="Share of a worker's time each client address's refused requests may take "
            f"(after a burst of {_DEFAULTS.refusal_burst_s:g} s); past it its requests wait "
            f"their turn, or get 429 source_throttled past {_DEFAULTS.refusal_max_wait_s:g} s. "
            "0: off. Behind a proxy, set --trusted-proxy so clients are told apart.",
        ),
        click.option(
            "--refusal-burst",
            type=click.FloatRange(min=0),
            default=_DEFAULTS.refusal_burst_s,
            show_default=True,
            help="Seconds of a worker's time each client address's refused requests may take "
            "at once before --refusal-share applies.",
        ),
    ]
    return stacked(f, options)


def refusal_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields for the values of ``refusal_options``."""
    return {
        "refusals_kept_per_s": values["refusals_per_source"],
        "refusals_summary_interval_s": values["refusal_summary_interval"],
        "refusal_share": values["refusal_share"],
        "refusal_burst_s": values["refusal_burst"],
    }
