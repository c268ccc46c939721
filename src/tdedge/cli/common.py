"""What the commands share: the ``--data-dir``, ``--control`` and ``--config`` options,
the settings they lead to, where every option's value comes from, and how rows are
printed.

Only ``serve`` (and the commands that create something on purpose: ``keys create``,
``db create``, ``p13n apply``, ``restore``) may create a data dir. A command that only
reads, run from the wrong directory, would otherwise make an empty ``./tdedge-data``
and answer with empty results as if there were nothing to show.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec

from tdedge.cli.sources import config_option as _config
from tdedge.config import Settings, default_data_dir

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ["table", "json", "csv"]

_data_dir = click.option(
    "--data-dir",
    default=None,
    metavar="DIR",
    help="Data directory (default: $TDEDGE_DATA_DIR, else ./tdedge-data).",
)


CONTROL = "tdedge.control"  # ctx.meta: the --control given here or on a group


def _keep_control(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[CONTROL] = value


# Not passed to the commands (each would need a parameter for it): kept in ctx.meta,
# which a command shares with its groups, and read by ``settings``.
_control = click.option(
    "--control",
    default=None,
    expose_value=False,
    callback=_keep_control,
    metavar="URL",
    help="The control database (accounts, keys, databases, jobs, p13n): "
    "postgresql://user:password@host:5432/db, shared by every node given it. "
    "Default: SQLite in the data dir.",
)


def data_dir_option(f: F) -> F:
    """``--data-dir``, ``--control`` and ``--config``, on a command or on a group (its
    commands then inherit them)."""
    return _config(_control(_data_dir(f)))


def stacked(f: F, options: Sequence[Callable[[F], F]]) -> F:
    """``f`` with ``options`` applied, the first listed first in ``--help``."""
    for option in reversed(options):
        f = option(f)
    return f


def format_option(default: str = "table") -> Callable[[F], F]:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default=default)


def _chosen(data_dir: str | None) -> str:
    """The data dir given on this command, else on a parent group, else the default."""
    ctx = click.get_current_context(silent=True)
    while data_dir is None and ctx is not None and ctx.parent is not None:
        ctx = ctx.parent
        data_dir = ctx.params.get("data_dir")
    return data_dir or default_data_dir()


def settings(data_dir: str | None, **overrides: Any) -> Settings:
    """Settings for the data dir (made by whoever first writes there) and the control
    database given (``--control``, its variable or file entry)."""
    ctx = click.get_current_context(silent=True)
    overrides.setdefault("control", (ctx.meta.get(CONTROL) if ctx else None) or "")
    return Settings(data_dir=_chosen(data_dir), **overrides)


def existing_settings(data_dir: str | None) -> Settings:
    """Settings for a data dir that is there; a usage error when no ``serve`` ever ran
    there (with a shared control database, the data dir holds only this node's own)."""
    found = settings(data_dir)
    if not found.control and not found.control_db.is_file():
        raise click.ClickException(
            f"no tdedge data dir at {found.root.resolve()}: pass --data-dir (or set "
            "TDEDGE_DATA_DIR) to the one tdedge serve uses, or start tdedge serve to make it"
        )
    return found


def emit(columns: Sequence[str], rows: list[dict[str, Any]], fmt: str) -> None:
    """Rows as a table for people, or JSON or CSV for scripts."""
    if fmt == "json":
        click.echo(msgspec.json.encode(rows, enc_hook=str).decode())
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(r[c]) for c in columns] for r in rows])
        sys.stdout.write(buf.getvalue())
    else:
        click.echo(table(columns, rows))


def table(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    cells = [[_text(r[c]) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    return "\n".join([line, rule, *body, count])


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _text(value: Any) -> str:
    return "" if value is None else str(value)
