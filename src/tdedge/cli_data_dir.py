"""Which data dir a command works on, and the refusal of one that is not there.

Only ``serve`` (and the commands that create something on purpose: ``keys create``,
``db create``, ``p13n apply``) may create a data dir. A command that only reads, run
from the wrong directory, would otherwise make an empty ``./tdedge-data`` and answer
with empty results as if there were nothing to show.
"""

from __future__ import annotations

import click

from tdedge.config import Settings, default_data_dir


def existing_settings(data_dir: str | None) -> Settings:
    """Settings for the data dir ``data_dir`` (or the default one); a usage error when no
    ``serve`` ever ran there."""
    settings = Settings(data_dir=data_dir or default_data_dir())
    if not settings.control_db.is_file():
        raise click.ClickException(
            f"no tdedge data dir at {settings.root.resolve()}: pass --data-dir (or set "
            "TDEDGE_DATA_DIR) to the one tdedge serve uses, or start tdedge serve to make it"
        )
    return settings
