"""serve's ``--roles``: which of its parts a node runs (config.ROLES), and the older
``--no-loader`` that leaves the loader out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tdedge.config import ROLES

F = TypeVar("F", bound=Callable[..., Any])

VALID = ", ".join(ROLES)


class RoleList(click.ParamType[tuple[str, ...], Any]):
    """A comma list of roles (a list too, from the config file), in ROLES' order."""

    name = "ROLES"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple) and all(v in ROLES for v in value):
            return value  # converted already (click converts a default twice)
        items = value if isinstance(value, list) else str(value).split(",")
        names = [str(item).strip().lower() for item in items if str(item).strip()]
        unknown = [n for n in names if n not in ROLES]
        if unknown:
            self.fail(f"unknown role {', '.join(map(repr, unknown))}; the roles are {VALID}")
        if not names:
            self.fail(f"name at least one role of {VALID}")
        return tuple(role for role in ROLES if role in names)


def role_options(f: F) -> F:
    """``--roles``, then ``--no-loader`` (in --help too)."""
    f = click.option(
        "--loader/--no-loader",
        default=True,
        show_default=True,
        help="--no-loader is the same as leaving loader out of --roles (kept for older scripts).",
    )(f)
    return click.option(
        "--roles",
        type=RoleList(),
        default=",".join(ROLES),
        show_default=True,
        help="What this node runs: edge (the HTTP doors and their ports), loader, jobs "
        "(the query job runner), engine (the p13n engine process). The others run in "
        "another serve on this data dir or on the shared backends; a node without the "
        "edge answers only /healthz, /readyz and /metrics on --port.",
    )(f)


def chosen_roles(
    roles: tuple[str, ...], loader: bool, door_ports: dict[str, int]
) -> tuple[str, ...]:
    """The roles serve runs, or a usage error for options that need a role left out."""
    if not loader:
        roles = tuple(role for role in roles if role != "loader")
        if not roles:
            raise click.UsageError(f"--no-loader leaves no role to run; the roles are {VALID}")
    if "edge" not in roles:
        for door in sorted(door_ports):
            raise click.UsageError(
                f"--{door}-port serves a door: it needs the edge role in --roles"
            )
    return roles
