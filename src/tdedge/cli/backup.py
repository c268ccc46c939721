"""``tdedge backup`` and ``tdedge restore``: a consistent copy of a data dir, taken while
``serve`` runs, and bringing one back (tdedge/backup.py says how)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from tdedge.cli import common
from tdedge.cli.common import data_dir_option, existing_settings


@click.command("backup")
@data_dir_option
@click.option("-q", "--quiet", is_flag=True, help="Say nothing but errors.")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def backup_command(data_dir: str | None, quiet: bool, dest: Path) -> None:
    """Copy the data dir into DEST (a new or empty folder), while serve keeps running.

    Every record acknowledged before the backup began is in the copy, once.
    """
    from tdedge.backup import BackupError, backup

    settings = existing_settings(data_dir)
    try:
        manifest = backup(settings, dest, report=_reporter(quiet))
    except BackupError as e:
        raise click.ClickException(str(e)) from e
    size = sum(f.bytes for f in manifest.files)
    took = manifest.finished_at - manifest.started_at
    if not quiet:
        click.echo(
            f"backed up {len(manifest.files)} files, {size} bytes, in {took:.1f} s to {dest}"
        )


@click.command("restore")
@data_dir_option
@click.option("-q", "--quiet", is_flag=True, help="Say nothing but errors.")
@click.argument(
    "source", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="SRC"
)
def restore_command(data_dir: str | None, quiet: bool, source: Path) -> None:
    """Bring the backup in SRC back into the data dir, which must be empty or missing
    (and so not served)."""
    from tdedge.backup import BackupError, restore

    settings = common.settings(data_dir)
    try:
        manifest = restore(source, settings, report=_reporter(quiet))
    except BackupError as e:
        raise click.ClickException(str(e)) from e
    if not quiet:
        click.echo(
            f"restored {len(manifest.files)} files into {settings.root} "
            f"(backup of {manifest.source}, begun at {manifest.started_at:.0f})"
        )


def _reporter(quiet: bool) -> Callable[[str], None]:
    def report(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    return report
