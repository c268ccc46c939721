"""The edge: an RSGI application served by granian, one instance per worker process.

It picks the door for each request (by ``Host``: ``*.records.in.*`` → records,
``*.p13n.in.*`` → p13n, ``api.*`` → api, ``cdp.in.*`` and ``cdp-*.in.*`` → cdp,
anything else → legacy), lets the door answer, and serves the operational routes.
Doors answer only once what they accepted is durable.

The operators' port is the API port once ``--api-port`` is set, else the main port: the
REST API, ``/metrics`` and the details of ``/readyz`` answer there only, so that what
operators see is never served on a public ingest port. Every port answers ``/healthz``
and a bare ``/readyz`` for load balancers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Protocol

from tdedge import backends, draining, metrics, readiness
from tdedge.config import Settings
from tdedge.edge.access_log import AccessLog
from tdedge.edge.cdp import CdpDoor
from tdedge.edge.deadlines import BodyDeadlines
from tdedge.edge.http import (
    JSON_HEADERS,
    ClientGone,
    HTTPError,
    Protocol_,
    Response,
    Scope,
    encode_json,
    error_response,
)
from tdedge.edge.legacy import LegacyDoor
from tdedge.edge.p13n import P13nDoor
from tdedge.edge.records import RecordsDoor
from tdedge.edge.services import REQUEST, RequestState, Services
from tdedge.edge.throttle import GO

log = logging.getLogger("tdedge.edge")

# The journal's writer thread must get the GIL back as soon as its fsync returns: with
# the default 5 ms switch interval every group commit can wait that long for the event
# loop to yield, and the clients waiting on that commit with it.
SWITCH_INTERVAL_S = 0.0002
OPS_ROUTES = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}
# Host names whose door a worker remembers (EdgeApp.door_for).
MAX_HOSTS = 1_024
# The status counted for a request whose client left before it was read (nginx's "client
# closed request"): nothing is answered, and nothing of it was accepted.
CLIENT_GONE = 499
# The reason code of a request for the operators' endpoints on another port.
OPERATORS_PORT_ONLY = "operators_port_only"


class Door(Protocol):
    name: str

    def route(self, path: str) -> str | None:
        """The route name for ``path`` (a metrics label), or None if this door has none."""
        ...

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response: ...

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        """``error``, raised before this door read the request (the throttle's 429), as
        this door answers its own errors: its clients parse that format only."""
        ...


class ElsewhereDoor:
    """A door served on another port: each of its requests is a 404 that says where."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self._message = message

    def route(self, path: str) -> str | None:
        return None if path in OPS_ROUTES else "elsewhere"

    async def handle(self, route: str, scope: Scope, proto: Protocol_) -> Response:
        raise HTTPError(404, OPERATORS_PORT_ONLY, self._message)

    def refused(self, route: str, error: HTTPError, scope: Scope) -> Response:
        return error_response(error)


def operators_port(settings: Settings) -> tuple[bool, str]:
    """Whether this listener is the operators' port, and what to call that port."""
    if "api" in settings.door_ports:
        return settings.fixed_door == "api", "the API port (--api-port)"
    return settings.fixed_door is None, "the main port (--port)"


def door_name(host: str) -> str:
    """The door a request for ``host`` goes to on a port that serves them all."""
    if ".records.in." in host:
        return "records"
    if ".p13n.in." in host:
        return "p13n"
    if host.startswith("api."):
        return "api"
    if cdp_host(host):
        return "cdp"
    return "legacy"


def cdp_host(host: str) -> bool:
    """Treasure Data's CDP hosts: ``cdp.in.<domain>`` and the regional
    ``cdp-<region>.in.<domain>`` (``cdp-tokyo.in.treasuredata.com``)."""
    first, _, rest = host.partition(".")
    return (first == "cdp" or first.startswith("cdp-")) and rest.startswith("in.")


def not_found_message(door: str, scope: Scope) -> str:
    """The 404's message; for what looks like a records-door request (``POST /db/table``)
    on a port that does not serve that door for this host, how to reach it."""
    message = f"no such endpoint: {scope.method} {scope.path}"
    parts = scope.path.strip("/").split("/")
    if door == "legacy" and scope.method == "POST" and len(parts) == 2 and all(parts):
        message += (
            "; POST /{database}/{table} is the records door's, which answers for host names "
            "*.records.in.* (or on serve's --records-port); this port takes Postback records "
            f"at POST /postback/v3/event/{parts[0]}/{parts[1]}"
        )
    return message


class EdgeApp:
    """``api_door`` builds the REST API's door from the worker's Services (worker.py hands
    in api/door.py's): without it this app has no REST API."""

    def __init__(
        self, settings: Settings, api_door: Callable[[Services], Door] | None = None
    ) -> None:
        self.settings = settings
        self._api_door = api_door
        self._services: Services | None = None
        self._doors: dict[str, Door] = {}
        self._door_names: dict[str, str] = {}  # host header → door_name(host)
        self._deadlines = BodyDeadlines(settings.body_idle_timeout_s, settings.body_timeout_s)
        self._operators, self._operators_port = operators_port(settings)
        self._access = (
            AccessLog(settings.access_log_per_s, time.monotonic()) if settings.access_log else None
        )
        # Set once this node drains (draining.py): /readyz answers 503 and every answer
        # closes its connection, so keep-alive clients reconnect (to another node).
        self._draining = False

    # RSGI lifecycle: the journal and its writer thread belong to the worker process.
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        journal = backends.journal(self.settings)
        self._services = Services(self.settings, journal)
        self._doors = {"legacy": LegacyDoor(self._services)}
        self._doors["records"] = RecordsDoor(self._services)
        if "api" in self.settings.door_ports and self.settings.fixed_door != "api":
            self._doors["api"] = ElsewhereDoor(
                "api", f"the REST API answers on {self._operators_port} only"
            )
        elif self._api_door is not None:
            self._doors["api"] = self._api_door(self._services)
        self._doors["p13n"] = P13nDoor(self._services)
        self._doors["cdp"] = CdpDoor(self._services)
        # Everything imported and built so far lives as long as the worker: keep the
        # collector from walking it again on every full collection, a pause that
        # every request in flight would wait out.
        gc.freeze()
        self._deadlines.start(loop)
        # SIGTERM drains instead of stopping: granian's own handler (kept for SIGINT)
        # stops the worker gracefully once the node's grace is over.
        loop.add_signal_handler(signal.SIGTERM, self._drain, loop)
        log.info("edge worker ready", extra={"pid": os.getpid(), "shard": journal.shard})

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close everything the worker opened: the doors' own resources, then what they
        share (Services.close)."""
        self._deadlines.stop()
        for door in self._doors.values():
            close = getattr(door, "close", None)
            if close is not None:
                close()
        if self._services is not None:
            self._services.close()

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        self._draining = True
        loop.call_later(draining.remaining(self.settings), os.kill, os.getpid(), signal.SIGINT)

    def door_for(self, scope: Scope) -> Door:
        doors = self._doors
        if self.settings.fixed_door is not None:
            return doors.get(self.settings.fixed_door) or doors["legacy"]
        host = scope.headers.get("host") or scope.authority or ""
        name = self._door_names.get(host)
        if name is None:
            # A client sends one host name again and again: deciding costs more than
            # looking the answer up. Bounded: the header is the client's to choose.
            if len(self._door_names) >= MAX_HOSTS:
                self._door_names.clear()
            name = self._door_names[host] = door_name(host)
        return doors.get(name) or doors["legacy"]

    async def __rsgi__(self, scope: Scope, proto: Protocol_) -> None:
        door = self.door_for(scope)
        route = "other"
        services = self._services
        assert services is not None
        throttle = services.throttle
        state = RequestState(scope)
        REQUEST.set(state)
        source: str | None = None
        turn = GO
        started: float | None = None
        arrived = time.perf_counter()
        code: str | None = None
        found = door.route(scope.path)
        try:
            if throttle and scope.path not in OPS_ROUTES:
                # Some address is being charged for refused requests: is this one it?
                # (Never a load balancer's health checks: behind a proxy not listed with
                # --trusted-proxy, the proxy's address is every client's.)
                source = services.source(scope)
                found_turn = throttle.turn(source, time.monotonic())
                if found_turn is None:
                    e = services.throttled(door.name, source)
                    if found is None:
                        raise e
                    route = found
                    status, headers, body = door.refused(found, e, scope)
                    services.counters.inc(door.name, route, status)
                    proto.response_bytes(status, headers, body)
                    return
                turn = found_turn
                if turn.wait:
                    await asyncio.sleep(turn.wait)
            started = time.perf_counter()
            if found is not None:
                route = found
                status, headers, body = await door.handle(
                    route, scope, self._deadlines.watch(proto)
                )
            elif scope.path in OPS_ROUTES:
                route = OPS_ROUTES[scope.path]
                status, headers, body = await self._ops(route)
            else:
                raise HTTPError(404, "not_found", not_found_message(door.name, scope))
        except HTTPError as e:
            status, headers, body = error_response(e)
            code = e.code
        except ClientGone:
            log.debug(
                "client left before its request was read",
                extra={"door": door.name, "route": route, "client": scope.client},
            )
            services.counters.inc(door.name, route, CLIENT_GONE)
            return
        # A refusal is charged to its address, an accepted request's turn given back
        # (edge/throttle.py): a 4xx, or records answered 200 but kept as refusals (a key
        # refused with --auth async). 5xx are the server's own trouble, not the client's;
        # so is a 429, a limit on what the server takes from everyone at once (the p13n
        # engine's concurrency); and a 408 is a slow network's (a carrier's address is
        # many phones): the deadlines and the connection cap answer slow clients, not this.
        refused = (400 <= status < 500 and status not in (408, 429)) or state.refused
        if started is not None and (source is not None or refused):
            throttle.settle(
                source if source is not None else services.source(scope),
                turn,
                time.perf_counter() - started,
                refused,
                time.monotonic(),
            )
        services.counters.inc(door.name, route, status)
        if self._draining:
            headers = [*headers, ("connection", "close")]
        proto.response_bytes(status, headers, body)
        if self._access is not None:
            self._access.request(
                time.monotonic(),
                client=source if source is not None else services.source(scope),
                method=scope.method,
                path=scope.path,
                status=status,
                error=code,
                door=door.name,
                route=route,
                sent_bytes=len(body),
                duration_ms=(time.perf_counter() - arrived) * 1000,
            )

    async def _ops(self, route: str) -> Response:
        if route == "healthz":
            return 200, JSON_HEADERS, b'{"status":"ok"}'
        if route == "readyz":
            status, headers, body = self._readyz()
            if not self._operators:
                # Whether to send traffic here, without the why: that is for operators.
                body = b'{"ready":true}' if status == 200 else b'{"ready":false}'
            return status, headers, body
        if not self._operators:
            raise HTTPError(
                404, OPERATORS_PORT_ONLY, f"/metrics answers on {self._operators_port} only"
            )
        # Reading every worker's metric files takes milliseconds: in a thread, the
        # requests this worker is serving meanwhile are not held up behind a scrape.
        text = await asyncio.to_thread(metrics.exposition)
        return 200, [("content-type", "text/plain; version=0.0.4; charset=utf-8")], text

    def _readyz(self) -> Response:
        assert self._services is not None
        journal = self._services.journal
        problems: list[str] = []
        if self._draining or draining.deadline(self.settings) is not None:
            # Told to stop (serve alone may have been): say so to the balancer, and
            # close connections from now on.
            self._draining = True
            problems.append("draining: stopping after SIGTERM")
        if not journal.writable():
            problems.append("journal not writable")
        # The node's other roles; a role run elsewhere is that node's to answer for.
        others, details = readiness.role_problems(self.settings, time.time())
        problems += others
        body = encode_json(
            {
                "ready": not problems,
                "problems": problems,
                "journal_backlog": journal.backlog(),
                # What a 200 means now: "local" (fsynced on this node) or "replicated".
                "journal_state": journal.state(),
                **details,
            }
        )
        return (503 if problems else 200), JSON_HEADERS, body
