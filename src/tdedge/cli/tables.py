"""``tdedge table …`` (retention, drop) and ``tdedge db drop``: the operator's side of
a table's life. Drops take the REST API's path (drops.py); retention is applied by
the loader (control/retention.py)."""

from __future__ import annotations

from typing import Any

import click

from tdedge.cli.common import data_dir_option, existing_settings
from tdedge.cli.lake_options import lake_options, with_lake
from tdedge.config import Settings
from tdedge.names import NAME_RULE, is_reserved, is_valid_name, normalize

yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _settings(data_dir: str | None) -> Settings:
    return existing_settings(data_dir)


def _name(value: str, what: str) -> str:
    if not is_valid_name(value):
        raise click.BadParameter(f"invalid {what} name {value!r}: {NAME_RULE}")
    return normalize(value)


def _database(settings: Settings, name: str) -> str:
    """``name`` normalised, once it names a database of some account."""
    from tdedge import backends

    database = _name(name, "database")
    if is_reserved(database):
        raise click.ClickException(f"{database} is a name tdedge keeps for itself")
    store = backends.control(settings)
    try:
        owner = store.database_owner(database)
    finally:
        store.close()
    if owner is None:
        raise click.ClickException(f"database {database} does not exist")
    return database


@click.group()
def table() -> None:
    """Tables: retention, drop."""


@table.command("retention")
@data_dir_option
@click.option(
    "--days",
    type=click.IntRange(1),
    default=None,
    help="Keep this many days of rows (by their time column); older ones are deleted.",
)
@click.option("--keep-all", is_flag=True, help="Remove the retention: keep every row.")
@click.argument("database", required=False)
@click.argument("table_name", metavar="TABLE", required=False)
def retention(
    data_dir: str | None,
    days: int | None,
    keep_all: bool,
    database: str | None,
    table_name: str | None,
) -> None:
    """Show or set how many days of rows TABLE keeps (all tables' without arguments).

    The loader deletes rows past the retention at each compaction pass (every minute
    by default); their files leave the disk once no snapshot the lake keeps uses them.
    """
    from tdedge import backends
    from tdedge.control.retention import RetentionRules

    settings = _settings(data_dir)
    if days is not None and keep_all:
        raise click.UsageError("--days and --keep-all exclude each other")
    if database is None or table_name is None:
        if database is not None or days is not None or keep_all:
            raise click.UsageError("name a DATABASE and a TABLE")
        rules = RetentionRules(backends.control_engine(settings))
        _table_out([r._asdict() for r in rules.all()])
        return
    db = _database(settings, database)
    name = _name(table_name, "table")
    rules = RetentionRules(backends.control_engine(settings))
    if days is None and not keep_all:
        found = rules.get(db, name)
        click.echo(f"{db}.{name}: " + ("keeps every row" if found is None else f"{found} days"))
        return
    rules.set(db, name, None if keep_all else days)
    if keep_all:
        click.echo(f"{db}.{name} keeps every row")
    else:
        click.echo(f"{db}.{name} keeps {days} days of rows; the loader deletes older ones")


@table.command("drop")
@data_dir_option
@lake_options
@yes_option
@click.argument("database")
@click.argument("table_name", metavar="TABLE")
def table_drop(
    data_dir: str | None, yes: bool, database: str, table_name: str, **lake_values: Any
) -> None:
    """Drop TABLE of DATABASE with all its rows."""
    from tdedge import backends, drops
    from tdedge.lake.inventory import LakeCatalog

    settings = with_lake(_settings(data_dir), lake_values)
    db = _database(settings, database)
    name = _name(table_name, "table")
    catalog = LakeCatalog(settings)
    try:
        info = catalog.table(db, name)
        if info is None:
            raise click.ClickException(f"table {db}.{name} does not exist")
        if not yes:
            click.confirm(f"Drop table {db}.{name} and its {info.count} rows?", abort=True)
        drops.drop_table(catalog, backends.control_engine(settings), db, name)
    finally:
        catalog.close()
    click.echo(f"dropped table {db}.{name}")


@click.command("drop")
@data_dir_option
@lake_options
@yes_option
@click.argument("name")
def db_drop(data_dir: str | None, yes: bool, name: str, **lake_values: Any) -> None:
    """Drop database NAME with all its tables and rows."""
    from tdedge import backends, drops
    from tdedge.lake.inventory import LakeCatalog

    settings = with_lake(_settings(data_dir), lake_values)
    db = _database(settings, name)
    catalog = LakeCatalog(settings)
    try:
        tables = catalog.tables(db)
        if not yes:
            rows = sum(t.count for t in tables)
            click.confirm(
                f"Drop database {db}, its {len(tables)} tables and {rows} rows?", abort=True
            )
        drops.drop_database(catalog, backends.control_engine(settings), db)
    finally:
        catalog.close()
    click.echo(f"dropped database {db}")


def _table_out(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no table has a retention: every table keeps every row")
        return
    for r in rows:
        click.echo(f"{r['database']}.{r['table']}: {r['days']} days")
