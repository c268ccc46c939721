"""The ``tdedge`` command. Every command works while ``serve`` runs on the same data dir."""

from __future__ import annotations

import os
from typing import Any

import click
import msgspec

from tdedge.cli.backup import backup_command, restore_command
from tdedge.cli.bulk_options import bulk_options, bulk_settings
from tdedge.cli.common import FORMATS, data_dir_option, emit, existing_settings
from tdedge.cli.common import settings as _settings
from tdedge.cli.configuration import config_group
from tdedge.cli.job_options import job_options, job_settings
from tdedge.cli.journal_options import journal_options, journal_settings
from tdedge.cli.lake_options import lake_options, lake_settings, with_lake
from tdedge.cli.migrate import migrate_command
from tdedge.cli.p13n import p13n
from tdedge.cli.profile_options import profile_options, profile_settings
from tdedge.cli.refusal_options import refusal_options, refusal_settings
from tdedge.cli.role_options import chosen_roles, role_options
from tdedge.cli.sources import Defaults, config_option
from tdedge.cli.status import status
from tdedge.cli.tables import db_drop, table
from tdedge.cli.tail import tail
from tdedge.config import SETTINGS_ENV, EngineMode, Settings
from tdedge.logs import LEVELS


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        from tdedge.control.schema import SchemaTooNew

        try:
            return super().invoke(ctx)
        except SchemaTooNew as e:  # a newer tdedge's database: say so and stop
            raise click.ClickException(str(e)) from e


# Every option's default in --help, for every command (sub-commands inherit it); each
# option's value from the environment or --config's file when the command line lacks
# it (cli/sources.py).
@click.group(cls=_Main, context_settings={"show_default": True, "default_map": Defaults()})
@click.version_option(package_name="tdedge")
@config_option
def main() -> None:
    """tdedge: Treasure Data's inbound APIs, self-hosted."""
    # Records, key hashes and query results are the accounts' data: whatever the shell's
    # umask, what tdedge creates is its user's alone (files 0600, directories 0700).
    # Set before any command runs, so the processes serve starts inherit it too.
    os.umask(0o077)


main.add_command(p13n)
main.add_command(status)
main.add_command(backup_command)
main.add_command(restore_command)
main.add_command(table)
main.add_command(tail)
main.add_command(config_group)
main.add_command(migrate_command)


@main.command()
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--auth",
    type=click.Choice(["async", "sync"]),
    default="async",
    show_default=True,
    help="async: check keys after answering 200, as Treasure Data does; "
    "sync: check keys at the edge and answer 403 at once.",
)
@click.option(
    "--max-body-bytes", default=1024 * 1024, show_default=True, type=click.IntRange(1, 64 << 20)
)
@click.option(
    "--journal-max-backlog",
    default=Settings().journal_max_backlog,
    show_default=True,
    type=click.IntRange(1),
    help="Records waiting for the loader before the edge answers 503.",
)
@click.option(
    "--header-timeout",
    default=Settings().header_timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="Close a connection whose request head is not in after this long (idle "
    "keep-alive connections included).",
)
@click.option(
    "--body-idle-timeout",
    default=Settings().body_idle_timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="Answer 408 when a request body pauses this long.",
)
@click.option(
    "--body-timeout",
    default=Settings().body_timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="Answer 408 when a request body is not in after this long.",
)
@click.option(
    "--max-connections",
    default=Settings().max_connections,
    show_default=True,
    type=click.IntRange(1),
    help="Open connections per worker; more wait in the kernel's listen queue.",
)
@click.option(
    "--drain-grace",
    default=Settings().drain_grace_s,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="After SIGTERM, answer /readyz 503 and keep serving this long before stopping, "
    "so a load balancer moves away first (its check interval times its fall count).",
)
@click.option(
    "--max-tables-per-account",
    default=Settings().max_tables_per_account,
    show_default=True,
    type=click.IntRange(1),
    help="Tables one account may have; records for more become import errors (table_limit).",
)
@click.option(
    "--max-databases-per-account",
    default=Settings().max_databases_per_account,
    show_default=True,
    type=click.IntRange(1),
    help="Databases one account may have; creating more is refused (database_limit).",
)
@click.option(
    "--compaction-interval",
    default=Settings().compaction_interval_s,
    show_default=True,
    type=click.FloatRange(0.1),
    metavar="SECONDS",
    help="Start a compaction pass this long after the last one ended: it deletes the rows "
    "past the tables' retentions, flushes small commits into Parquet, merges small files "
    "and expires old snapshots.",
)
@click.option(
    "--snapshot-retention",
    default=Settings().lake_retention_s,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Keep the lake's snapshots this long (time travel, the console's feed); "
    "compaction then deletes the files only older snapshots used. A query running "
    "longer than this may lose a file it reads.",
)
@role_options
@click.option(
    "--records-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve the records door alone on this port.",
)
@click.option(
    "--p13n-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve the personalization door alone on this port.",
)
@click.option(
    "--cdp-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve the CDP door (profile lookups, fetchUserSegments) alone on this port.",
)
@click.option(
    "--api-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve the REST API door alone on this port.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM certificate: serve HTTPS (browsers and td-js-sdk use https).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM private key for --tls-cert.",
)
# Records door and pixel.
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Origin (https://shop.example.com) whose pages may call tdedge from a browser "
    "(records door, p13n /public/, CDP lookups); repeatable. Default: any origin.",
)
@click.option(
    "--redirect-host",
    "redirect_hosts",
    multiple=True,
    metavar="HOST",
    help="Host the pixel's td_redirect may send browsers to (example.com, *.example.com); "
    "repeatable. Default: none, every redirect is refused.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="CIDR",
    help="Proxy address or network whose X-Forwarded-For gives td_ip; repeatable.",
)
@click.option(
    "--cookie-domain",
    default=None,
    metavar="DOMAIN",
    help="Domain attribute of the global-id cookie (default: this host only).",
)
@click.option(
    "--p13n-engine",
    type=click.Choice(["process", "inline"]),
    default="process",
    show_default=True,
    help="process: one personalization engine process decides for every worker; "
    "inline: each worker runs the engine itself.",
)
@lake_options
@job_options
@refusal_options
@bulk_options
@profile_options
@journal_options
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="info")
@click.option(
    "--access-log/--no-access-log",
    default=False,
    help="One JSON log line per request, at most --access-log-rate a second per worker "
    "(the rest counted).",
)
@click.option(
    "--access-log-rate",
    default=Settings().access_log_per_s,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    metavar="LINES",
    help="Access log lines each worker writes a second at most; the next line written "
    "says how many requests were left out (skipped).",
)
def serve(
    data_dir: str | None,
    host: str,
    port: int,
    workers: int,
    auth: str,
    max_body_bytes: int,
    journal_max_backlog: int,
    header_timeout: float,
    body_idle_timeout: float,
    body_timeout: float,
    max_connections: int,
    drain_grace: float,
    max_tables_per_account: int,
    max_databases_per_account: int,
    compaction_interval: float,
    snapshot_retention: float,
    roles: tuple[str, ...],
    loader: bool,
    records_port: int | None,
    p13n_port: int | None,
    cdp_port: int | None,
    api_port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    cors_origins: tuple[str, ...],
    redirect_hosts: tuple[str, ...],
    trusted_proxies: tuple[str, ...],
    cookie_domain: str | None,
    p13n_engine: EngineMode,
    log_level: str,
    access_log: bool,
    access_log_rate: float,
    **grouped: Any,  # the values of the *_options groups
) -> None:
    """Run the HTTP server, the loader, the query job runner and the p13n engine, or the
    roles named."""
    from tdedge import logs, server

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    ports = {"records": records_port, "p13n": p13n_port, "cdp": cdp_port, "api": api_port}
    door_ports = {door: p for door, p in ports.items() if p is not None}
    settings = _settings(
        data_dir,
        host=host,
        port=port,
        workers=workers,
        roles=chosen_roles(roles, loader, door_ports),
        auth=auth,
        max_body_bytes=max_body_bytes,
        journal_max_backlog=journal_max_backlog,
        header_timeout_s=header_timeout,
        body_idle_timeout_s=body_idle_timeout,
        body_timeout_s=body_timeout,
        max_connections=max_connections,
        drain_grace_s=drain_grace,
        max_tables_per_account=max_tables_per_account,
        max_databases_per_account=max_databases_per_account,
        compaction_interval_s=compaction_interval,
        lake_retention_s=snapshot_retention,
        door_ports=door_ports,
        tls_cert=tls_cert,
        tls_key=tls_key,
        **_records_settings(cors_origins, redirect_hosts, trusted_proxies, cookie_domain),
        p13n_engine=p13n_engine,
        log_level=log_level.lower(),
        access_log=access_log,
        access_log_per_s=access_log_rate,
        **lake_settings(grouped),
        **job_settings(grouped),
        **refusal_settings(grouped),
        **bulk_settings(grouped),
        **profile_settings(grouped),
        **journal_settings(grouped),
    )
    logs.configure(settings.log_level)
    server.serve(settings)


def _records_settings(
    cors_origins: tuple[str, ...],
    redirect_hosts: tuple[str, ...],
    trusted_proxies: tuple[str, ...],
    cookie_domain: str | None,
) -> dict[str, Any]:
    """Check the records door's options here, so a typo fails at start, not per request."""
    import ipaddress

    from tdedge.edge.cookies import valid_cookie_domain

    for entry in trusted_proxies:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--trusted-proxy") from e
    for origin in cors_origins:
        if origin != "*" and (
            not origin.startswith(("http://", "https://")) or origin.endswith("/")
        ):
            raise click.BadParameter(
                f"{origin!r}: an origin is scheme://host[:port], no path",
                param_hint="--cors-origin",
            )
    domain = None
    if cookie_domain is not None:
        domain = valid_cookie_domain(cookie_domain)
        if domain is None:
            raise click.BadParameter(
                f"{cookie_domain!r} is not a DNS name", param_hint="--cookie-domain"
            )
    return {
        "cors_origins": cors_origins or None,
        "redirect_hosts": redirect_hosts,
        "trusted_proxies": trusted_proxies,
        "cookie_domain": domain,
    }


@main.command("listen", hidden=True)
@click.option("--parent-pid", type=int, default=None)
def listen_command(parent_pid: int | None) -> None:
    """One dedicated door port (``serve`` starts these for --records-port and the like)."""
    import os

    from tdedge import lifecycle, logs, server

    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    logs.configure(settings.log_level)
    if parent_pid is not None:
        lifecycle.exit_with_parent(parent_pid)
    server.listen(settings)


@main.command("loader")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@data_dir_option
def loader_command(parent_pid: int | None, data_dir: str | None) -> None:
    """Run the loader alone (serve starts it for you)."""
    from tdedge.server import run_loader

    run_loader(_child_settings(data_dir), parent_pid)


def _child_settings(data_dir: str | None) -> Settings:
    """A process ``serve`` started gets the server's settings; run alone, the defaults."""
    import os

    from tdedge import logs

    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.from_json(raw) if raw else _settings(data_dir)
    logs.configure(settings.log_level)
    return settings


@main.command("jobs")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@data_dir_option
def jobs_command(parent_pid: int | None, data_dir: str | None) -> None:
    """Run the query job runner alone (serve starts it for you)."""
    import time

    from tdedge.loader.heartbeat import starting_beat, write_heartbeat

    settings = _child_settings(data_dir)
    # Alive from the start: the runner's imports (DuckDB, SQL translation) take seconds
    # on a busy machine, and /readyz should not call a starting runner missing.
    write_heartbeat(settings.jobs_heartbeat, starting_beat(settings.jobs_heartbeat, time.time()))
    from tdedge.query.runner import run_job_runner

    run_job_runner(settings, parent_pid)


# Keys.
@main.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed)."""


@keys.command("create")
@data_dir_option
@click.option("--account", default=1, show_default=True, type=click.IntRange(1))
@click.option("--type", "type_", type=click.Choice(["write", "master"]), default="write")
def keys_create(data_dir: str | None, account: int, type_: str) -> None:
    """Print a new key, "ACCOUNT/SECRET". It is shown only this once."""
    store = _control(data_dir)
    click.echo(store.create_key(account, "master" if type_ == "master" else "write"))


@keys.command("list")
@data_dir_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
def keys_list(data_dir: str | None, fmt: str) -> None:
    """List keys by id (the secret is never shown again)."""
    rows = [msgspec.structs.asdict(k) for k in _control(data_dir, existing=True).list_keys()]
    emit(["key_id", "account_id", "type", "revoked", "created_at"], rows, fmt)


@keys.command("revoke")
@data_dir_option
@click.argument("key_id")
def keys_revoke(data_dir: str | None, key_id: str) -> None:
    """Revoke a key by the id that keys list shows."""
    from tdedge.errors import NotFound

    try:
        _control(data_dir, existing=True).revoke_key(key_id)
    except NotFound as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"revoked {key_id}")


# Databases.
@main.group()
def db() -> None:
    """Create and list databases."""


db.add_command(db_drop)


@db.command("create")
@data_dir_option
@lake_options
@click.option("--account", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-databases-per-account",
    default=Settings().max_databases_per_account,
    show_default=True,
    type=click.IntRange(1),
    help="Refuse the database when the account has this many (as serve's option).",
)
@click.argument("name")
def db_create(
    data_dir: str | None,
    account: int,
    max_databases_per_account: int,
    name: str,
    **lake_values: Any,
) -> None:
    from tdedge import backends
    from tdedge.errors import ControlError
    from tdedge.lake.lake import Lake

    settings = _settings(
        data_dir,
        max_databases_per_account=max_databases_per_account,
        **lake_settings(lake_values),
    )
    try:
        store = backends.control(settings)
        info = store.create_database(name, account)
    except ControlError as e:
        raise click.ClickException(str(e)) from e
    lake = Lake.open(settings)
    try:
        lake.ensure_schema(info.name)
    finally:
        lake.close()
    click.echo(f"created database {info.name}")


@db.command("list")
@data_dir_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
def db_list(data_dir: str | None, fmt: str) -> None:
    rows = [msgspec.structs.asdict(d) for d in _control(data_dir, existing=True).list_databases()]
    emit(["name", "account_id", "created_at"], rows, fmt)


# Queries.
@main.command()
@data_dir_option
@lake_options
@click.option("-d", "--database", default=None, help="Database to resolve table names in.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
@click.argument("sql")
def query(
    data_dir: str | None, database: str | None, fmt: str, sql: str, **lake_values: Any
) -> None:
    """Run SQL (DuckDB dialect) over the lake's tables."""
    from tdedge.errors import LakeError
    from tdedge.lake.lake import Lake

    lake = Lake.open(with_lake(existing_settings(data_dir), lake_values), read_only=True)
    try:
        result = lake.query(sql, database)
    except LakeError as e:
        raise click.ClickException(str(e)) from e
    finally:
        lake.close()
    emit(result.columns, [dict(zip(result.columns, r, strict=True)) for r in result.rows], fmt)


@main.command()
@data_dir_option
@lake_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
def errors(data_dir: str | None, fmt: str, limit: int, **lake_values: Any) -> None:
    """Show the import-errors table: every record that did not reach its table, and why."""
    from tdedge.lake.lake import Lake

    lake = Lake.open(with_lake(existing_settings(data_dir), lake_values), read_only=True)
    try:
        result = lake.import_errors(limit)
    finally:
        lake.close()
    emit(result.columns, [dict(zip(result.columns, r, strict=True)) for r in result.rows], fmt)


def _control(data_dir: str | None, existing: bool = False) -> Any:
    """The control store; ``existing``: only a data dir that is there (a read)."""
    from tdedge import backends

    return backends.control(existing_settings(data_dir) if existing else _settings(data_dir))


@main.command("engine")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@data_dir_option
def engine_command(parent_pid: int | None, data_dir: str | None) -> None:
    """Run the personalization engine alone (serve starts it for you)."""
    from tdedge import backends
    from tdedge.realtime import host

    host.run(_child_settings(data_dir), backends.profiles, backends.registry, parent_pid)
