"""``tdedge config show``: the settings a command here would run with, and where each
comes from (flag, environment, config file, default), secrets masked."""

from __future__ import annotations

import enum
import os
from typing import Any

import click

from tdedge.cli import sources
from tdedge.cli.common import CONTROL, data_dir_option, format_option, settings
from tdedge.cli.common import emit as _emit

# The standard AWS variables the object store is reached with (every S3 tool reads
# them); shown when set, the secret masked.
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")


@click.group("config")
def config_group() -> None:
    """Where tdedge's settings come from."""


@config_group.command("show")
@data_dir_option
@format_option()
def config_show(data_dir: str | None, fmt: str) -> None:
    """Every option of serve (and the shared ones) with its value and its source:
    flag > environment (TDEDGE_*) > config file (--config) > default."""
    ctx = click.get_current_context()
    serve = ctx.find_root().command
    assert isinstance(serve, click.Group)
    options: dict[str, click.Option] = {}
    for command in (ctx.command, serve.commands["serve"]):
        for param in command.params:
            if isinstance(param, click.Option) and param.name and not param.hidden:
                options.setdefault(param.name, param)
    effective = settings(data_dir)
    rows: list[dict[str, Any]] = []
    for name, option in options.items():
        if name in ("help", "config"):
            continue
        value, source = _value(ctx, name, option)
        if name == "data_dir":
            value = effective.data_dir
        elif name == "control" and not value:
            value = effective.control_url
        elif name == "lake_catalog" and not value:
            value = f"sqlite:///{effective.lake_catalog_file}"
        elif name == "lake_data" and not value:
            value = str(effective.lake_data_dir)
        rows.append(
            {"setting": name, "value": sources.masked(name, _text(value)), "source": source}
        )
    config = ctx.meta.get("tdedge.config.path") or os.environ.get(sources.env_name("config"))
    rows.append({"setting": "config", "value": config or "", "source": "flag" if config else "-"})
    for variable in AWS_VARIABLES:
        if variable in os.environ:
            shown = sources.MASK if "SECRET" in variable else os.environ[variable]
            rows.append({"setting": variable, "value": shown, "source": f"env {variable}"})
    _emit(["setting", "value", "source"], rows, fmt)


def _value(ctx: click.Context, name: str, option: click.Option) -> tuple[Any, str]:
    if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
        return (ctx.meta.get(CONTROL) if name == "control" else ctx.params.get(name)), "flag"
    hit = sources.found(option, ctx.meta)
    if hit is not None:
        return hit
    default = option.default() if callable(option.default) else option.default
    if isinstance(default, enum.Enum):
        default = None  # click's marker for an option with no default
    return default, "default"


def _text(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value
