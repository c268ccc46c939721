"""``tdedge p13n``: real-time personalization as code, its tokens, profiles and segments.

Every command takes ``--data-dir`` (on ``p13n`` itself or on the sub-command) and works
while ``serve`` runs on the same data dir: edge workers pick a new configuration or
token up within a second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec

from tdedge.cli import common
from tdedge.cli.common import data_dir_option, emit, iso_ms
from tdedge.cli.profile_options import profile_options
from tdedge.config import Settings


def _settings(data_dir: str | None, existing: bool = False) -> Settings:
    """The data dir given here or on ``p13n``; ``existing``: a command that only reads or
    changes what is there, refused on a data dir that is not."""
    return common.existing_settings(data_dir) if existing else common.settings(data_dir)


def _registry(settings: Settings) -> Any:
    from tdedge import backends

    return backends.registry(settings)


@click.group("p13n")
@data_dir_option
def p13n(data_dir: str | None) -> None:
    """Real-time personalization: configuration, tokens, profiles, segments."""


@p13n.command("apply")
@data_dir_option
@click.option("--check", is_flag=True, help="Validate only; change nothing.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def apply_command(data_dir: str | None, check: bool, file: Path) -> None:
    """Validate FILE.yaml and install it atomically (a bad file changes nothing)."""
    from tdedge.realtime import validation
    from tdedge.realtime.errors import ConfigInvalid

    text = file.read_text(encoding="utf-8")
    try:
        parsed = validation.parse(text, str(file))
    except ConfigInvalid as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        count = len(e.problems)
        raise click.ClickException(
            f"{file}: {count} problem{'s' if count != 1 else ''}; nothing was changed"
        ) from None
    names = ", ".join(s.name for s in parsed.services)
    if check:
        click.echo(f"{file} is valid (services: {names})")
        return
    registry = _registry(_settings(data_dir))
    try:
        version = registry.apply(parsed, text)
        ids = registry.instance_ids()
    finally:
        registry.close()
    click.echo(f"applied {file} as version {version}")
    for spec in parsed.services:
        click.echo(f"  service {spec.name}: instance {ids[spec.name]}, database {spec.database}")
    if any(s.segments or _imports(s) for s in parsed.services):
        click.echo("segments load on their schedule; `tdedge p13n refresh` loads them now")


def _imports(spec: Any) -> bool:
    from tdedge.realtime.config import ImportedSpec

    return any(isinstance(a, ImportedSpec) and a.sql for a in spec.attributes)


@p13n.command("show")
@data_dir_option
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
def show_command(data_dir: str | None, fmt: str) -> None:
    """Print the active configuration (as applied, comments and all)."""
    registry = _registry(_settings(data_dir, existing=True))
    try:
        applied = registry.active()
    finally:
        registry.close()
    if applied is None:
        raise click.ClickException("no configuration applied yet (tdedge p13n apply FILE.yaml)")
    if fmt == "json":
        from tdedge.realtime import config

        click.echo(config.to_json(applied.config).decode())
        return
    when = datetime.fromtimestamp(applied.applied_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    click.echo(f"# version {applied.version}, applied {when}")
    sys.stdout.write(applied.source if applied.source.endswith("\n") else applied.source + "\n")


# Tokens.
@p13n.group("tokens")
@data_dir_option
def tokens_group(data_dir: str | None) -> None:
    """Create, list and revoke personalization tokens (stored hashed)."""


@tokens_group.command("create")
@data_dir_option
@click.option("--allow-ip", "allow_ips", multiple=True, metavar="CIDR", help="Repeatable.")
@click.option("--public", is_flag=True, help="A browser token, for /public/{db}/{table}.")
@click.option("--account", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--lookup",
    default=None,
    metavar="NAME",
    help="A lookup token (the CDP door, fetchUserSegments) for the service's lookup NAME.",
)
@click.option("--name", default="", help="A label shown by tokens list.")
@click.argument("service")
@click.pass_context
def tokens_create(
    ctx: click.Context,
    data_dir: str | None,
    allow_ips: tuple[str, ...],
    public: bool,
    account: int,
    lookup: str | None,
    name: str,
    service: str,
) -> None:
    """Print a new token, shown only this once: ACCOUNT/INSTANCE/SECRET, or with
    --lookup a lookup token (a UUID, as Treasure Data's Profiles API tokens)."""
    from tdedge.realtime.errors import P13nError

    if lookup is not None:
        explicit = [
            f"--{option.replace('_', '-')}"
            for option in ("allow_ips", "public", "account")
            if ctx.get_parameter_source(option) is not click.core.ParameterSource.DEFAULT
        ]
        if explicit:
            raise click.UsageError(
                f"a lookup token takes none of {', '.join(explicit)}: it needs no API key, "
                "and its service's allowed_origins limit the pages that may use it"
            )
    registry = _registry(_settings(data_dir))
    try:
        if lookup is not None:
            token = registry.create_lookup_token(service, lookup, name)
        else:
            token = registry.create_token(service, account, public, list(allow_ips), name)
    except (P13nError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        registry.close()
    click.echo(token)


@tokens_group.command("list")
@data_dir_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def tokens_list(data_dir: str | None, fmt: str) -> None:
    """List tokens by id, lookup tokens with their lookup (secrets are never shown again)."""
    registry = _registry(_settings(data_dir, existing=True))
    try:
        found = registry.list_tokens()
        lookups = registry.list_lookup_tokens()
    finally:
        registry.close()
    columns = ["token_id", "service", "account_id", "instance_id", "public", "allow_ips", "name"]
    rows = [
        {**{c: getattr(t, c) for c in [*columns, "revoked", "created_at"]}, "lookup": None}
        for t in found
    ]
    # Lookup tokens sit in web pages and take no API key: public, of no account.
    rows += [
        {
            "token_id": t.token_id,
            "service": t.service,
            "account_id": None,
            "instance_id": t.instance_id,
            "public": True,
            "allow_ips": [],
            "name": t.name,
            "revoked": t.revoked,
            "created_at": t.created_at,
            "lookup": t.lookup,
        }
        for t in lookups
    ]
    for r in rows:
        r["allow_ips"] = ",".join(r["allow_ips"]) if fmt == "table" else r["allow_ips"]
    emit([*columns, "lookup", "revoked", "created_at"], rows, fmt)


@tokens_group.command("revoke")
@data_dir_option
@click.argument("token_id")
def tokens_revoke(data_dir: str | None, token_id: str) -> None:
    """Revoke a token by the id tokens list shows (seen by the edge within a second)."""
    from tdedge.errors import NotFound

    registry = _registry(_settings(data_dir, existing=True))
    try:
        registry.revoke_token(token_id)
    except NotFound as e:
        raise click.ClickException(str(e)) from e
    finally:
        registry.close()
    click.echo(f"revoked {token_id}")


# Profiles.
def _service(settings: Settings, name: str | None) -> Any:
    from tdedge.realtime.refresh import compiled

    registry = _registry(settings)
    try:
        services = compiled(registry)
    finally:
        registry.close()
    if not services:
        raise click.ClickException("no configuration applied yet (tdedge p13n apply FILE.yaml)")
    if name is None:
        if len(services) > 1:
            raise click.ClickException(
                f"several services; pick one with --service ({', '.join(services)})"
            )
        return next(iter(services.values()))
    if name not in services:
        raise click.ClickException(f"no service {name!r} (services: {', '.join(services)})")
    return services[name]


def _engine(settings: Settings) -> Any:
    from tdedge import backends
    from tdedge.realtime.engine import Engine

    return Engine(backends.profiles(settings), backends.batch_store(settings))


def _keys(service: Any, pairs: Sequence[str]) -> list[str]:
    from tdedge.realtime.profile import key_of

    columns = {r.column for r in service.keys}
    keys = []
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not value:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        if column not in columns:
            raise click.BadParameter(
                f"{column!r} is not a key column of {service.name} ({', '.join(sorted(columns))})",
                param_hint="KEY=VALUE",
            )
        keys.append(key_of(column, value))
    return keys


@p13n.command("profile")
@data_dir_option
@click.option("--service", default=None, help="Needed when several services are configured.")
@profile_options
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
def profile_command(
    data_dir: str | None, service: str | None, profiles: str, pairs: tuple[str, ...]
) -> None:
    """Print the real-time profile an identity key leads to, as JSON (pass serve's
    --profiles when the profiles live in Redis)."""
    settings = msgspec.structs.replace(_settings(data_dir, existing=True), profiles=profiles)
    svc = _service(settings, service)
    engine = _engine(settings)
    now_ms = int(time.time() * 1000)
    try:
        explained = engine.explain(svc, _keys(svc, pairs), now_ms)
        if explained.profile is None:
            raise click.ClickException(f"no profile for {' '.join(pairs)}")
        profile = explained.profile
        merges = engine.store.merges(svc.name, profile.id)
    finally:
        engine.store.close()
        engine.batch.close()
    out = {
        "service": svc.name,
        "id": profile.id,
        "keys": dict_keys(profile.keys),
        "created": iso_ms(profile.created_ms),
        "updated": iso_ms(profile.updated_ms),
        "events": profile.events,
        "attributes": explained.values,
        "segments": explained.segments,
        "merges": [
            {"time": iso_ms(m.time_ms), "merged_profile": m.merged, "keys": dict_keys(m.keys)}
            for m in merges
        ],
    }
    click.echo(msgspec.json.format(msgspec.json.encode(out), indent=2).decode())


def dict_keys(keys: Sequence[str]) -> dict[str, list[str]]:
    from tdedge.realtime.profile import split_key

    out: dict[str, list[str]] = {}
    for key in keys:
        column, value = split_key(key)
        out.setdefault(column, []).append(value)
    return out


@p13n.command("explain")
@data_dir_option
@click.option("--service", default=None, help="Needed when several services are configured.")
@click.option("--table", default=None, help="The event's table (default: the first event table).")
@click.option(
    "--event", "event_json", default=None, help="A JSON event to apply first (in memory)."
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@profile_options
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE...]")
def explain_command(
    data_dir: str | None,
    service: str | None,
    table: str | None,
    event_json: str | None,
    fmt: str,
    profiles: str,
    pairs: tuple[str, ...],
) -> None:
    """Dry run: section by section, which condition passes or fails, and why.

    Nothing is written: with --event the profile is updated in memory only. Keys come
    from KEY=VALUE arguments, or from the event's key columns.
    """
    settings = msgspec.structs.replace(_settings(data_dir, existing=True), profiles=profiles)
    svc = _service(settings, service)
    event: dict[str, Any] | None = None
    if event_json is not None:
        try:
            event = msgspec.json.decode(event_json)
        except msgspec.DecodeError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="--event") from None
        if not isinstance(event, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--event")
    keys = _keys(svc, pairs) if pairs else (svc.event_keys(event) if event else [])
    if not keys:
        raise click.UsageError("give KEY=VALUE, or an --event with a key column")
    if table is not None and table not in svc.event_tables:
        raise click.BadParameter(
            f"{table!r} is not an event table of {svc.name}", param_hint="--table"
        )
    engine = _engine(settings)
    try:
        explained = engine.explain(svc, keys, int(time.time() * 1000), table, event)
    finally:
        engine.store.close()
        engine.batch.close()
    if fmt == "json":
        click.echo(msgspec.json.encode(explained, enc_hook=str).decode())
        return
    profile = explained.profile
    click.echo(
        f"profile {profile.id} ({profile.events} events)"
        if profile and profile.id
        else "no profile yet"
    )
    click.echo(f"attributes: {msgspec.json.encode(explained.values).decode()}")
    click.echo(f"segments: {', '.join(explained.segments) or '-'}")
    for trace in explained.sections:
        _print_trace(trace, 0)


def _print_trace(trace: Any, depth: int) -> None:
    mark = "PASS" if trace.passed else "FAIL"
    # Conditions show the value they saw (null included); groups show their parts.
    leaf = not trace.children and not trace.what.startswith("section ")
    seen = msgspec.json.encode(trace.actual, enc_hook=str).decode()
    click.echo(f"{'  ' * depth}{mark} {trace.what}" + (f"  (actual: {seen})" if leaf else ""))
    for child in trace.children:
        _print_trace(child, depth + 1)


@p13n.command("merges")
@data_dir_option
@click.option("--service", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def merges_command(data_dir: str | None, service: str | None, limit: int, fmt: str) -> None:
    """The merge log: which profiles identity stitching folded into which, newest first."""
    settings = _settings(data_dir, existing=True)
    svc = _service(settings, service)
    engine = _engine(settings)
    try:
        found = engine.store.merges(svc.name, None, limit)
    finally:
        engine.store.close()
        engine.batch.close()
    rows = [
        {
            "time": iso_ms(m.time_ms),
            "survivor": m.survivor,
            "merged": m.merged,
            "keys": m.keys if fmt == "json" else " ".join(m.keys),
        }
        for m in found
    ]
    emit(["time", "survivor", "merged", "keys"], rows, fmt)


@p13n.command("refresh")
@data_dir_option
@click.option("--service", default=None, help="Only this service's sources.")
@click.option("--segment", "segments", multiple=True, help="Only this segment id (repeatable).")
def refresh_command(data_dir: str | None, service: str | None, segments: tuple[str, ...]) -> None:
    """Load batch segments and imported attributes from the lake now."""
    from tdedge import backends
    from tdedge.realtime import refresh

    settings = _settings(data_dir, existing=True)
    registry = _registry(settings)
    store = backends.batch_store(settings)
    try:
        outcomes = refresh.refresh_all(
            settings,
            registry,
            store,
            int(time.time() * 1000),
            only_due=False,
            select=lambda s, b: (
                (service is None or s.name == service)
                and (not segments or (b.kind == "segment" and b.name in segments))
            ),
        )
    finally:
        store.close()
        registry.close()
    if not outcomes:
        click.echo("nothing to refresh")
    failed = 0
    for o in outcomes:
        if o.error is None:
            click.echo(f"{o.service} {o.kind} {o.name}: {o.rows} rows")
        else:
            failed += 1
            click.echo(f"{o.service} {o.kind} {o.name}: FAILED: {o.error}", err=True)
    if failed:
        raise click.ClickException(f"{failed} source{'s' if failed != 1 else ''} failed")
