"""``tdedge tail``: the rows and import errors the loader commits, as it commits them,
in a terminal (the console's stream, lake/feed.py, for every account)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click
import msgspec

from tdedge.cli.common import data_dir_option, existing_settings
from tdedge.cli.lake_options import lake_options, with_lake

# A table's rows one poll prints at most (the newest): a busy table is sampled.
ROWS_PER_POLL = 200


@click.command("tail")
@data_dir_option
@lake_options
@click.option("-d", "--database", default=None, help="Only this database.")
@click.option("-t", "--table", "table_name", default=None, help="Only this table.")
@click.option("--errors", "errors_only", is_flag=True, help="Only import errors.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="How often to look for new commits.",
)
@click.option("--once", is_flag=True, help="Print the latest commits' events and stop.")
def tail(
    data_dir: str | None,
    database: str | None,
    table_name: str | None,
    errors_only: bool,
    fmt: str,
    interval: float,
    once: bool,
    **lake_values: Any,
) -> None:
    """Print rows and import errors as the loader commits them (Ctrl-C to stop).

    Starts with the last few commits; each line is one row with the door it came in
    by, or one import error with its reason, door and the record as received.
    """
    import duckdb

    from tdedge.errors import LakeError
    from tdedge.lake.connection import open_connection
    from tdedge.lake.feed import Event, read_changes
    from tdedge.names import normalize

    settings = with_lake(existing_settings(data_dir), lake_values)
    db = normalize(database) if database else None
    tbl = normalize(table_name) if table_name else None

    def wanted(d: str, t: str) -> bool:
        return (db is None or d == db) and (tbl is None or t == tbl)

    def show(e: Event) -> None:
        if errors_only and e.reason is None:
            return
        if fmt == "json":
            click.echo(msgspec.json.encode(e).decode())
            return
        at = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        record = msgspec.json.encode(e.record).decode()
        if e.reason is None:
            door = f"({e.door})  " if e.door else ""
            click.echo(f"{at}  {e.database}.{e.table}  {door}{record}")
        else:
            click.echo(f"{at}  {e.database}.{e.table}  ERROR {e.reason} ({e.door})  {record}")

    con: duckdb.DuckDBPyConnection | None = None
    cursor: int | None = None
    try:
        while True:
            if con is None:
                con = open_connection(settings, read_only=True)
            try:
                changes = read_changes(con, cursor, wanted, account_id=None, limit=ROWS_PER_POLL)
            except LakeError as e:
                # A reader can go stale (see Lake.query): a fresh one sees the catalog.
                con.close()
                con = None
                if once:
                    raise click.ClickException(str(e)) from e
                time.sleep(interval)
                continue
            for event in changes.events:
                show(event)
            cursor = changes.cursor
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        if con is not None:
            con.close()
