"""``tdedge serve``: first-start bootstrap, the loader process and the granian edge.

Process tree: this supervisor runs granian (which forks the edge workers) for the main
port, and keeps beside it one loader process, the query job runner, the p13n engine
and one listener process per dedicated door port, restarting any that dies. The loader
and the engine exit by themselves when the supervisor disappears, and each takes an
exclusive lock so two of them never run on one data dir.

``--roles`` picks which of these run: the edge (granian and the door listeners), the
loader, the job runner, the engine. A serve without the edge answers only health probes
on its port (health_port.py); the roles it leaves out run in another serve, on this
data dir or on the shared backends.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import msgspec

from tdedge import draining, health_port, instance, lifecycle, logs, worker_stop
from tdedge.config import SETTINGS_ENV, Settings

log = logging.getLogger("tdedge.server")


def prepare_data_dir(settings: Settings) -> None:
    """Create the data dir's layout, and close the data dir to other users.

    The CLI's umask makes what tdedge creates private; a data dir made before (by an
    older tdedge, or by hand) may be readable by all, and with it every file below:
    0700 on the data dir itself keeps them out, whatever the files' own modes.
    """
    settings.root.mkdir(parents=True, exist_ok=True)
    try:
        settings.root.chmod(0o700)
    except PermissionError:
        log.warning(
            "cannot make the data dir private: another user owns it",
            extra={"data_dir": str(settings.root)},
        )
    for d in (settings.journal_dir, settings.lake_data_dir, settings.loader_heartbeat.parent):
        d.mkdir(parents=True, exist_ok=True)


EXAMPLE_DATABASE = "test_db"


def bootstrap(settings: Settings) -> tuple[str, str] | None:
    """On an empty data dir create account 1 with a master and a write key.

    Also the example's database: a write key cannot create one, and the curl example
    printed at first start must work as pasted.
    """
    from tdedge import backends

    store = backends.control(settings)
    try:
        if store.account_count() > 0:
            return None
        store.create_account(1)
        keys = store.create_key(1, "master"), store.create_key(1, "write")
        store.create_database(EXAMPLE_DATABASE, 1)
        return keys
    finally:
        store.close()


def welcome(settings: Settings, keys: tuple[str, str] | None) -> str:
    scheme = "https" if settings.tls_cert else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"
    where = f"{url} (data dir {settings.root.resolve()})"
    if "edge" in settings.roles:
        lines = [f"tdedge listening on {where}"]
    else:
        roles = ", ".join(settings.roles)
        lines = [f"tdedge running {roles}, health checks on {where}"]
    if keys is not None:
        master, write = keys
        lines += [
            "",
            "First start: created account 1 and its database test_db.",
            "These keys are shown once; only their hashes are kept.",
            f"  master key: {master}",
            f"  write key:  {write}",
        ]
        if "edge" in settings.roles:  # the example needs the doors
            lines += [
                "",
                "Try it:",
                "  curl -X POST -H 'Content-Type: application/json'"
                f" -H 'X-TD-Write-Key: {write}' \\",
                '    --data-binary \'{"param1":"value1", "param2":1234}\' \\',
                f"    {url}/postback/v3/event/{EXAMPLE_DATABASE}/test_tbl",
                f"  {command()} query --data-dir {shlex.quote(str(settings.root.resolve()))}"
                f" -d {EXAMPLE_DATABASE} 'SELECT * FROM test_tbl'",
            ]
    return "\n".join(lines)


def command() -> str:
    """How to run this tdedge from a shell, as pasted: ``tdedge`` when that is what the
    PATH finds, else the full path of the running script (``.venv/bin/tdedge`` is not on
    the PATH until the venv is activated), else ``python -m tdedge``."""
    script = Path(sys.argv[0]).resolve()
    found = shutil.which("tdedge")
    if found is not None and Path(found).resolve() == script:
        return "tdedge"
    if script.name == "tdedge" and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m tdedge"


# A child that dies this soon after it started is failing to start, not crashing now and
# then: each restart then waits twice as long as the one before, up to RESTART_MAX_S, so
# a crash loop does not take the cores from the edge (a job runner that could not open
# its sessions was seen restarting every 2 s).
QUICK_DEATH_S = 10.0
# How a child ends when asked to (0 after it handled SIGINT or SIGTERM, or killed by
# one), and how long after such an end serve's own signal may take to arrive: Ctrl-C
# signals the whole process group at once, and the supervisor may see the child gone
# before serve's signal handler ran.
STOPPED_CLEANLY = frozenset({0, -signal.SIGINT, -signal.SIGTERM})
SHUTDOWN_GRACE_S = 2.0
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0


def restart_delay(previous_s: float | None, uptime_s: float) -> float:
    """How long to wait before restarting a child that died after ``uptime_s``, the
    last wait having been ``previous_s`` (None: it never died before)."""
    if previous_s is None or uptime_s >= QUICK_DEATH_S:
        return RESTART_MIN_S
    return min(RESTART_MAX_S, previous_s * 2)


class ChildSupervisor:
    """Keeps one child process (``python -m tdedge ARGS``) running; restarts it if it dies."""

    def __init__(
        self, name: str, settings: Settings, args: list[str], stopping: threading.Event
    ) -> None:
        self._name = name
        self._settings = settings
        self._args = args
        # Set once serve itself got SIGINT or SIGTERM: Ctrl-C reaches the children too
        # (one process group), and their ends are then the shutdown, not a crash.
        self._stopping = stopping
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0  # monotonic time of the last spawn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-supervisor", daemon=True)

    @property
    def name(self) -> str:
        return self._name

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        env = dict(os.environ)
        env[SETTINGS_ENV] = self._settings.to_json().decode()
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tdedge", *self._args, "--parent-pid", str(os.getpid())],
            env=env,
        )

    def _watch(self) -> None:
        delay: float | None = None
        while not self._stop.wait(0.5):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            delay = restart_delay(delay, time.monotonic() - self._started)
            if proc.returncode in STOPPED_CLEANLY and self._stopping.wait(SHUTDOWN_GRACE_S):
                log.info("child stopped", extra={"child": self._name})
                return
            log.error(
                "child exited; restarting",
                extra={"child": self._name, "returncode": proc.returncode, "in_s": delay},
            )
            if self._stop.wait(delay):
                return
            self._spawn()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def serve(settings: Settings) -> None:
    """Bootstrap, then run the roles of ``settings.roles``: the edge on ``settings.port``
    (every door, chosen by Host) and one listener per ``settings.door_ports`` entry (that
    door only), the loader, the job runner and the p13n engine process."""
    edge = "edge" in settings.roles
    try:
        # Checked before the data dir is made: a serve that cannot start leaves none.
        instance.check_not_running(settings)
        instance.check_ports(settings)
        prepare_data_dir(settings)
        lock_fds = instance.claim(settings)
    except instance.AlreadyRunning as e:
        raise click.ClickException(str(e)) from None
    if edge:  # the drain is the edge's: a serve beside it must not end or start one
        draining.clear(settings)
    prepare_metrics_dir(settings.metrics_dir)
    keys = bootstrap(settings)
    click.echo(welcome(settings, keys), err=False)
    sys.stdout.flush()
    stopping = threading.Event()
    children = [
        ChildSupervisor(
            f"{door}-door",
            msgspec.structs.replace(settings, port=port, fixed_door=door),
            ["listen"],
            stopping,
        )
        for door, port in sorted(settings.door_ports.items())
        if edge
    ]
    if "loader" in settings.roles:
        children.append(ChildSupervisor("loader", settings, ["loader"], stopping))
    if "jobs" in settings.roles:  # the query job runner
        children.append(ChildSupervisor("jobs", settings, ["jobs"], stopping))
    if "engine" in settings.roles and settings.engine_process:
        children.append(ChildSupervisor("p13n-engine", settings, ["engine"], stopping))
    instance.write_state(settings)
    for child in children:
        child.start()
    try:
        if edge:
            listen(settings, stopping)
        else:
            health_port.serve(settings, stopping)
    finally:
        for child in children:
            child.stop()
        instance.state_file(settings).unlink(missing_ok=True)
        if edge:
            draining.clear(settings)
        for fd in lock_fds:
            os.close(fd)


def listen(settings: Settings, stopping: threading.Event | None = None) -> None:
    """Run granian for one listening address (blocks until it stops); ``stopping`` is
    set when it is told to stop (SIGINT, SIGTERM).

    SIGTERM drains (draining.py): granian is stopped only once the node's grace is
    over, and then stops its workers gracefully (they finish the requests in flight).
    SIGINT, or a second SIGTERM once the grace is over, stops it at once."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    class Granian(Server):  # type: ignore[misc,valid-type]
        drain_timer: threading.Timer | None = None

        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            if stopping is not None:
                stopping.set()
            signum = args[0] if args else None
            if signum == signal.SIGTERM and self.drain_timer is None:
                left = draining.remaining(settings)
                if left > 0:
                    log.info("draining: not ready, stopping after the grace", extra={"in_s": left})
                    self.drain_timer = threading.Timer(left, self.stop_now)
                    self.drain_timer.daemon = True
                    self.drain_timer.start()
                    return
            self.stop_now()

        def stop_now(self) -> None:
            # granian stops its workers with SIGTERM, which drains in a worker: they
            # must stop at once, on SIGINT as at the end of the grace.
            draining.end(settings)
            super().signal_handler_interrupt()

    os.environ[SETTINGS_ENV] = settings.to_json().decode()
    worker_stop.once_per_worker()
    Granian(
        "tdedge.worker:create_app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        factory=True,
        log_level=settings.log_level,
        log_dictconfig=logs.granian_config(),
        backlog=LISTEN_BACKLOG,
        backpressure=connection_slots(settings.max_connections),
        # HTTP/1.1 only: to tell HTTP/2 from HTTP/1 granian waits for a connection's
        # first bytes with no deadline at all, so a client that connects and sends
        # nothing held a slot for good. The header deadline starts at connect instead.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_timeout_s * 1000)),
        ssl_cert=Path(settings.tls_cert) if settings.tls_cert else None,
        ssl_key=Path(settings.tls_key) if settings.tls_key else None,
    ).serve()


# Connections the kernel completes and queues for a worker that is at max_connections.
LISTEN_BACKLOG = 2048
# Open files a worker needs besides its connections: the journal, the control and lake
# catalogs, metric files, the engine's socket, pipes.
FILES_BESIDE_CONNECTIONS = 256


def connection_slots(wanted: int) -> int:
    """The connections each worker may hold: ``wanted``, if the open-files limit allows.

    Each connection is an open file, and a worker whose connections took every file it
    may open can open no other: not its journal, not a metrics file. So the soft limit
    is raised to the hard one (as granian's workers do), and the slots are cut to what
    leaves the worker its own files (with a warning).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    fits = (
        wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - FILES_BESIDE_CONNECTIONS)
    )
    if fits < wanted:
        log.warning(
            "fewer connections per worker than --max-connections: the open-files limit is low",
            extra={"max_connections": max(fits, 1), "wanted": wanted, "open_files_limit": soft},
        )
    return max(fits, 1)


def prepare_metrics_dir(directory: Path) -> None:
    """Give the worker processes a fresh prometheus multiprocess directory.

    Must run before prometheus_client is imported anywhere in this process tree: the
    library picks its storage when first imported (which is why this is not in metrics.py).
    Imported earlier, every worker would count in memory and /metrics would show none of
    their requests: refuse to start rather than serve metrics that silently miss them.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def run_loader(settings: Settings, parent_pid: int | None) -> None:
    """The loader process: one per data dir, stops on SIGTERM or when ``serve`` is gone."""
    from tdedge import backends
    from tdedge.control.directory import Directory
    from tdedge.control.imports import ImportLedger
    from tdedge.control.retention import RetentionRules
    from tdedge.lake.lake import Lake
    from tdedge.loader.record_ids import RecordIds
    from tdedge.loader.runner import Loader
    from tdedge.realtime.refresh import start as start_p13n_refresher

    stop = lifecycle.stop_event(parent_pid)
    lock_fd = lifecycle.role_lock(settings, "loader", stop)
    if lock_fd is None:
        return
    store = backends.control(settings)
    control = store.engine
    reader = backends.journal_reader(settings)
    lake = Lake.open(settings)
    record_ids = RecordIds.open(settings.record_ids_db)
    # Lower priority once started: start-up (imports, the lake's extensions) is a short
    # burst that readiness waits on; the loading after it is what may wait for the edge.
    os.nice(settings.loader_nice)
    try:
        log.info("loader started", extra={"pid": os.getpid()})
        # p13n batch segments refresh on their schedule: one thread per data dir.
        start_p13n_refresher(
            settings, stop, backends.profiles, backends.registry, backends.refresh_stores
        )
        directory = Directory(store, ttl_s=settings.key_cache_ttl_s)
        Loader(
            settings,
            reader,
            directory,
            lake,
            ledger=ImportLedger(control),
            record_ids=record_ids,
            retention=RetentionRules(control),
        ).run(stop)
    finally:
        record_ids.close()
        lake.close()
        reader.close()
        store.close()
        os.close(lock_fd)
