"""What ``/readyz`` says about the roles a node runs beside its edge: the loader's and
the job runner's heartbeats and the p13n engine's socket.

A node answers for its own roles only (``--roles``): an edge-only node is ready when
its edge is, whatever runs the loader; a node that runs no edge answers the same
checks on its health port (health_port.py), for the load balancer's or the
orchestrator's probes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tdedge.config import Settings
from tdedge.loader.heartbeat import JobsHeartbeat, jobs_problems, read_beat, read_heartbeat
from tdedge.realtime.wire import listening

# One failed batch is retried at once; several in a row mean the lake is unreachable.
LOADER_FAILURES_NOT_READY = 3


def role_problems(settings: Settings, now: float) -> tuple[list[str], dict[str, Any]]:
    """Why the loader, job runner or engine of this node is not ready (nothing for a
    role it does not run), and the details ``/readyz`` shows: the roles, and each
    heartbeat found in the data dir, whichever process of it wrote it."""
    problems: list[str] = []
    beat = read_heartbeat(settings.loader_heartbeat)
    if "loader" in settings.roles:
        if beat is None:
            problems.append("loader has not started")
        else:
            if now - beat.time > settings.loader_heartbeat_timeout_s:
                problems.append(f"loader silent for {now - beat.time:.0f}s")
            if beat.lag_seconds > settings.ready_max_lag_s:
                problems.append(f"loader lag {beat.lag_seconds:.1f}s")
            if beat.failures >= LOADER_FAILURES_NOT_READY:
                problems.append(f"loader failed {beat.failures} batches in a row")
    jobs = read_beat(settings.jobs_heartbeat, JobsHeartbeat)
    if "jobs" in settings.roles:
        problems += jobs_problems(jobs, now, settings.jobs_heartbeat_timeout_s)
    # Inline, the edge's workers decide themselves: there is no engine process to ask.
    engine = "engine" in settings.roles and settings.engine_process
    if engine and not listening(settings.p13n_socket):
        problems.append("p13n engine not listening")
    details = {
        "roles": list(settings.roles),
        "loader": msgspec.structs.asdict(beat) if beat else None,
        "jobs": msgspec.structs.asdict(jobs) if jobs else None,
    }
    return problems, details
