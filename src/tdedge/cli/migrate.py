"""``tdedge migrate``: move a one-machine data dir onto the shared backends
(tdedge/migration/ says how)."""

from __future__ import annotations

import click

from tdedge.cli.lake_options import _catalog, _data
from tdedge.config import Settings, default_data_dir


@click.command("migrate")
@click.option(
    "--data-dir",
    default=None,
    metavar="DIR",
    help="The data dir to move (default: $TDEDGE_DATA_DIR, else ./tdedge-data); only "
    "read, never changed.",
)
@click.option(
    "--to-control",
    required=True,
    default=None,
    metavar="URL",
    help="The shared control database, as serve's --control: postgresql://user@host/db "
    "(empty: no table with a row).",
)
@click.option(
    "--to-lake-catalog",
    required=True,
    default=None,
    callback=_catalog,
    metavar="URL",
    help="The shared lake catalog, as serve's --lake-catalog: postgresql://user@host/db "
    "(an empty database).",
)
@click.option(
    "--to-lake-data",
    required=True,
    default=None,
    callback=_data,
    metavar="URL",
    help="Where the lake's files go, as serve's --lake-data: s3://bucket/prefix/ "
    "(credentials, region, endpoint from the AWS_* variables).",
)
@click.option("-q", "--quiet", is_flag=True, help="Say nothing but errors.")
def migrate_command(
    data_dir: str | None, to_control: str, to_lake_catalog: str, to_lake_data: str, quiet: bool
) -> None:
    """Copy the data dir's accounts, keys, databases, tables (rows and history), import
    errors, jobs and results, and p13n configuration onto PostgreSQL and S3.

    Start the nodes with the same URLs afterwards (serve --control, --lake-catalog,
    --lake-data). Refused while serve runs on the data dir, while its journal holds
    records not yet in the lake, and into a control database or catalog already in use.
    """
    from tdedge.migration.run import migrate, targets
    from tdedge.migration.snapshot import MigrationError

    # Only the data dir's own embedded stores: TDEDGE_CONTROL and TDEDGE_LAKE_* name
    # the targets a node would use, never where the data dir keeps its state.
    source = Settings(data_dir=data_dir or default_data_dir())
    target = targets(to_control, to_lake_catalog, to_lake_data, source.root)

    def report(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    try:
        summary = migrate(source, target, report)
    except MigrationError as e:
        raise click.ClickException(str(e)) from e
    if not quiet:
        click.echo(
            f"migrated {source.root.resolve()}: {summary.snapshots} lake snapshots, "
            f"{summary.files_copied + summary.files_kept} files, "
            f"{sum(summary.control_rows.values())} control rows"
        )
