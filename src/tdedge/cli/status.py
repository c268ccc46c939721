"""``tdedge status``: whether a ``serve`` runs on a data dir, and how it is doing.

Read from the data dir alone (no HTTP): the locks and state files of every ``serve`` on
it (instance.py; several when their roles are split), the loader's and the job runner's
heartbeats (the journal's files when no loader beats), and the newest row of the import
errors. The exit code is 0 when a ``serve`` runs, 1 when none does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click
import msgspec

from tdedge.cli.common import data_dir_option, existing_settings
from tdedge.cli.lake_options import lake_options, with_lake
from tdedge.config import Settings


@click.command("status")
@data_dir_option
@lake_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(data_dir: str | None, as_json: bool, **lake_values: Any) -> None:
    """Whether a server runs on the data dir: pid, ports, doors, version, journal
    backlog, loader lag, the last import error. Exits 1 when none runs."""
    settings = with_lake(existing_settings(data_dir), lake_values)
    report = gather(settings, time.time())
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(render(report))
    if not report["running"]:
        raise SystemExit(1)


def gather(settings: Settings, now: float) -> dict[str, Any]:
    from tdedge import backends, instance
    from tdedge.loader.heartbeat import JobsHeartbeat, read_beat, read_heartbeat

    held = instance.running(settings)
    serves: list[dict[str, Any]] = []
    for pid in dict.fromkeys(held.values()):  # one entry per serve, the edge's first
        roles = [role for role, holder in held.items() if holder == pid]
        entry: dict[str, Any] = {"pid": pid if pid > 0 else None, "roles": roles}
        state = instance.read_state(settings, roles[0])
        if state is not None and state.pid == pid:
            entry.update(
                version=state.version,
                started_at=_iso(state.started_at),
                url=f"{state.scheme}://{state.host}:{state.port}",
                ports={"main": state.port, **state.door_ports},
            )
        serves.append(entry)
    report: dict[str, Any] = {
        "running": bool(serves),
        "data_dir": str(settings.root.resolve()),
    }
    if serves:
        report.update(serves[0], serves=serves)
    loader = read_heartbeat(settings.loader_heartbeat)
    if loader is not None:
        report["journal_backlog"] = loader.lag_records
        report["loader"] = {
            "pid": loader.pid,
            "lag_seconds": round(loader.lag_seconds, 3),
            "beat_age_seconds": round(now - loader.time, 1),
            "failures": loader.failures,
        }
    elif (waiting := backends.unloaded(settings)) is not None:
        records, oldest_ms = waiting
        report["journal_backlog"] = records
        report["loader"] = {
            "pid": None,  # none has beaten: it does not run (serve --no-loader) or starts
            "lag_seconds": round(_waited(oldest_ms, now), 3),
            "beat_age_seconds": None,
            "failures": 0,
        }
    jobs = read_beat(settings.jobs_heartbeat, JobsHeartbeat)
    if jobs is not None:
        report["jobs"] = {
            "pid": jobs.pid,
            "running": jobs.running,
            "beat_age_seconds": round(now - jobs.time, 1),
        }
    report["last_error"] = last_import_error(settings)
    return report


def last_import_error(settings: Settings) -> dict[str, Any] | None:
    """The newest row of the import errors, or None (or what kept it from being read)."""
    from tdedge.errors import LakeError
    from tdedge.lake.lake import Lake

    try:
        lake = Lake.open(settings, read_only=True)
    except Exception as e:  # a lake not made yet, or locked: status still answers
        return {"unreadable": str(e)}
    try:
        result = lake.import_errors(1)
    except LakeError as e:
        return {"unreadable": str(e)}
    finally:
        lake.close()
    if not result.rows:
        return None
    row = dict(zip(result.columns, result.rows[0], strict=True))
    return {
        "at": _iso(row["received_ms"] / 1000),
        "reason": row["reason"],
        "detail": row["detail"],
        "door": row["door"],
        "table": f"{row['database_name']}.{row['table_name']}",
    }


def render(report: dict[str, Any]) -> str:
    if not report["running"]:
        lines = [f"no tdedge serve runs on {report['data_dir']}"]
    else:
        ports = ", ".join(f"{door} {port}" for door, port in report.get("ports", {}).items())
        lines = [
            f"tdedge serve runs on {report['data_dir']}",
            f"  pid:             {report.get('pid')}",
            f"  version:         {report.get('version', 'unknown')}",
            f"  since:           {report.get('started_at', 'unknown')}",
            f"  url:             {report.get('url', 'unknown')}",
            f"  ports:           {ports or 'unknown'}",
            f"  roles:           {', '.join(report.get('roles', [])) or 'unknown'}",
        ]
        for other in report.get("serves", [])[1:]:
            lines.append(
                f"  also:            pid {other['pid']} runs {', '.join(other['roles'])}"
                f" ({other.get('url', 'url unknown')})"
            )
    loader = report.get("loader")
    if loader is not None:
        beat = (
            "no loader has beaten: none runs on this data dir"
            if loader["pid"] is None
            else f"last beat {loader['beat_age_seconds']} s ago, pid {loader['pid']}"
        )
        lines += [
            f"  journal backlog: {report['journal_backlog']} records",
            f"  loader lag:      {loader['lag_seconds']} s ({beat})",
        ]
    error = report.get("last_error")
    if error is None:
        lines.append("  last error:      none")
    elif "unreadable" in error:
        lines.append(f"  last error:      unreadable ({error['unreadable']})")
    else:
        lines.append(
            f"  last error:      {error['at']} {error['reason']} on {error['door']} "
            f"{error['table']}: {error['detail']}"
        )
    return "\n".join(lines)


def _waited(oldest_ms: int | None, now: float) -> float:
    return 0.0 if oldest_ms is None else max(0.0, now - oldest_ms / 1000)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
