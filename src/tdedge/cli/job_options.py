"""``serve`` options for query jobs (query/runner.py)."""

from __future__ import annotations

from typing import Any

import click

from tdedge.cli.common import F, stacked
from tdedge.config import Settings

_DEFAULTS = Settings()


def job_options(f: F) -> F:
    """Add --job-workers, --job-timeout, --job-memory-limit, --job-result-days,
    --job-lease and --geoip-database."""
    options = [
        click.option(
            "--job-workers",
            type=click.IntRange(1, 64),
            default=_DEFAULTS.job_workers,
            show_default=True,
            help="Query jobs run at once (each a DuckDB instance); more wait queued.",
        ),
        click.option(
            "--job-timeout",
            type=click.FloatRange(0.1),
            default=_DEFAULTS.job_timeout_s,
            show_default=True,
            help="Seconds a query job may run before it is stopped with an error.",
        ),
        click.option(
            "--job-memory-limit",
            default=_DEFAULTS.job_memory_limit,
            show_default=True,
            help="DuckDB memory_limit of each job (spills to disk beyond it where it can).",
        ),
        click.option(
            "--job-result-days",
            type=click.FloatRange(min=0, min_open=True),
            default=_DEFAULTS.job_result_retention_s / 86400,
            show_default=True,
            help="Days a job's result file is kept; the job itself stays listed.",
        ),
        click.option(
            "--job-lease",
            type=click.FloatRange(1),
            default=_DEFAULTS.job_lease_s,
            show_default=True,
            help="Seconds after which a job whose node died is taken over by another "
            "node's runner (run again once, then failed).",
        ),
        click.option(
            "--geoip-database",
            type=click.Path(exists=True, dir_okay=False, resolve_path=True),
            default=None,
            help="MaxMind City database (.mmdb) for TD_IP_TO_*; default: the bundled "
            "2018 GeoLite2 City.",
        ),
    ]
    return stacked(f, options)


def job_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields for the values of ``job_options``."""
    return {
        "job_workers": values["job_workers"],
        "job_timeout_s": values["job_timeout"],
        "job_memory_limit": values["job_memory_limit"],
        "job_result_retention_s": values["job_result_days"] * 86400,
        "job_lease_s": values["job_lease"],
        "geoip_database": values["geoip_database"],
    }
