"""Where an option's value comes from: the command line, else the environment, else the
config file, else its default.

Every option of every command takes part without code of its own: ``--control`` is also
``TDEDGE_CONTROL`` and ``control = "…"`` in the file given by ``--config`` (or
``TDEDGE_CONFIG``), ``--lake-catalog`` is ``TDEDGE_LAKE_CATALOG`` and ``lake_catalog``
(or ``lake-catalog``), and so on: the variable is ``TDEDGE_`` and the option's name in
capitals, the file key the option's name. This is click's ``default_map`` (consulted
only when the command line does not give the option), answered by ``Defaults`` from the
environment first, then the file.

The file is TOML, one flat table of option names; a name no command knows is refused,
so that a typo does not pass unnoticed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

ENV_PREFIX = "TDEDGE_"
# ctx.meta (shared by a command and its groups): the config file's values and path.
_VALUES = "tdedge.config.values"
_PATH = "tdedge.config.path"
# Options that never come from the environment or the file.
_OWN = frozenset({"help", "version", "parent_pid"})
MASK = "***"
# Option names whose values are secrets whatever they look like.
_SECRET_WORDS = ("password", "secret", "token")


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def _option(ctx: click.Context, name: str) -> click.Option | None:
    for param in ctx.command.params:
        if param.name == name and isinstance(param, click.Option):
            return param
    return None


def names(option: click.Option) -> list[str]:
    """What an option is called in the environment and the file: its parameter's name
    (``cors_origins``) and its long flags (``cors_origin``), dashes as underscores."""
    flags = [f[2:].replace("-", "_") for f in option.opts if f.startswith("--")]
    return list(dict.fromkeys([option.name or "", *flags]))


def found(option: click.Option, meta: Mapping[str, Any]) -> tuple[Any, str] | None:
    """The option's value from the environment or else the config file, with where it
    came from; None when neither gives it."""
    if option.name in _OWN or option.hidden:
        return None
    aliases = names(option)
    for name in aliases:
        raw = os.environ.get(env_name(name))
        if raw is not None:
            return raw, f"env {env_name(name)}"
    values: dict[str, Any] = meta.get(_VALUES, {})
    for name in aliases:
        if option.name != "config" and name in values:
            return values[name], f"file {meta.get(_PATH)}"
    return None


class Defaults(Mapping[str, Any]):
    """click's ``default_map`` for every command: itself for a sub-command's name, the
    environment's or the config file's value for an option's."""

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __getitem__(self, key: str) -> Any:
        ctx = click.get_current_context(silent=True)
        if ctx is None:
            raise KeyError(key)
        option = _option(ctx, key)
        if option is None:
            if isinstance(ctx.command, click.Group) and key in ctx.command.commands:
                return self  # the defaults of a sub-command being entered
            raise KeyError(key)
        hit = found(option, ctx.meta)
        if hit is None:
            raise KeyError(key)
        value, source = hit
        if isinstance(value, str) and (option.multiple or option.nargs != 1):
            return option.type.split_envvar_value(value)
        if source.startswith("file") and option.multiple and not isinstance(value, list):
            return [value]
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def known_options(command: click.Command) -> set[str]:
    """The names (``names``) of the options of ``command`` and every command under it."""
    known = {n for p in command.params if isinstance(p, click.Option) for n in names(p)}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            known |= known_options(sub)
    return known


def _load(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.meta.get(_PATH) == value:
        return
    try:
        data = tomllib.loads(Path(value).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise click.BadParameter(f"cannot read {value}: {e}", param_hint="--config") from e
    values = {key.replace("-", "_"): v for key, v in data.items()}
    nested = sorted(k for k, v in values.items() if isinstance(v, dict))
    unknown = sorted(set(values) - known_options(ctx.find_root().command) - set(nested))
    if nested or unknown:
        raise click.BadParameter(
            f"{value}: "
            + "; ".join(
                ([f"unknown setting(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"tables are not read ({', '.join(nested)})"] if nested else [])
            ),
            param_hint="--config",
        )
    ctx.meta[_VALUES] = values
    ctx.meta[_PATH] = value


config_option = click.option(
    "--config",
    default=None,
    metavar="FILE",
    is_eager=True,  # read before the options it gives values to
    expose_value=False,
    callback=_load,
    help='TOML file of option values (control = "postgresql://…"); the command line '
    "and TDEDGE_* variables go first.",
)


def masked(name: str, value: Any) -> Any:
    """``value`` fit to print: a URL's password and secret-named values hidden."""
    if not isinstance(value, str) or not value:
        return value
    if any(word in name.lower() for word in _SECRET_WORDS):
        return MASK
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:{MASK}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
