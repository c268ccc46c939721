"""The ``serve`` processes that run on a data dir: their locks, their state files, and
the port check.

A ``serve`` holds ``run/serve-<role>.lock`` for each of its roles (``--roles``) for as
long as it runs, and writes ``run/serve-<role>.json`` (pid, ports, roles, version) under
its first role for ``tdedge status``. So two ``serve`` processes may share a data dir
when their roles do not overlap (an edge-only one beside a loader-only one), and one
that would run a role another already runs there refuses to start and says which
process is in the way; so does one whose port some process listens on already:
granian's workers listen with SO_REUSEPORT, so without this check the kernel would
silently share the port's connections between the two servers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from importlib import metadata
from pathlib import Path

import msgspec

from tdedge.config import ROLES, Settings


class ServeState(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    version: str
    started_at: float  # unix seconds
    host: str
    port: int
    scheme: str  # "http" or "https"
    door_ports: dict[str, int]  # dedicated door ports (records, p13n, cdp, api)
    roles: list[str]  # what this serve runs (config.ROLES)
    data_dir: str


class AlreadyRunning(Exception):
    """Another ``serve`` holds the data dir, or another process the port."""


def version() -> str:
    try:
        return metadata.version("tdedge")
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown"


def lock_file(settings: Settings, role: str) -> Path:
    return settings.root / "run" / f"serve-{role}.lock"


def state_file(settings: Settings, role: str | None = None) -> Path:
    """The state file of the serve running ``role``, by default of this one (named
    after its first role)."""
    return settings.root / "run" / f"serve-{role or settings.roles[0]}.json"


def check_not_running(settings: Settings) -> None:
    """Raise AlreadyRunning if a ``serve`` runs one of these roles on the data dir
    (``claim`` makes sure)."""
    for role in settings.roles:
        pid = _holder_of(lock_file(settings, role))
        if pid is not None:
            raise AlreadyRunning(_running_message(settings, role, pid if pid > 0 else None))


def _running_message(settings: Settings, role: str, pid: int | None) -> str:
    return (
        f"another tdedge serve (pid {pid or 'unknown'}) runs the {role} role on the data "
        f"dir {settings.root.resolve()}; stop it first, or leave {role} out of --roles "
        "(tdedge status shows what runs)"
    )


def claim(settings: Settings) -> list[int]:
    """Take the data dir's lock of each of this serve's roles; their fds (held until the
    process ends).

    Raises AlreadyRunning naming the pid of the ``serve`` that holds one of them.
    """
    fds: list[int] = []
    for role in settings.roles:
        path = lock_file(settings, role)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            for taken in [fd, *fds]:
                os.close(taken)
            raise AlreadyRunning(_running_message(settings, role, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        fds.append(fd)
    return fds


def running(settings: Settings) -> dict[str, int]:
    """The roles some ``serve`` runs on the data dir, each with its pid (-1: unknown)."""
    found: dict[str, int] = {}
    for role in ROLES:
        pid = _holder_of(lock_file(settings, role))
        if pid is not None:
            found[role] = pid
    return found


def running_pid(settings: Settings) -> int | None:
    """The pid of a ``serve`` on the data dir (the edge's first), or None when none runs."""
    return next(iter(running(settings).values()), None)


def _holder_of(path: Path) -> int | None:
    """The pid holding the lock at ``path`` (-1 if it does not say), or None if no one does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_state(settings: Settings) -> None:
    state = ServeState(
        pid=os.getpid(),
        version=version(),
        started_at=time.time(),
        host=settings.host,
        port=settings.port,
        scheme="https" if settings.tls_cert else "http",
        door_ports=dict(settings.door_ports),
        roles=list(settings.roles),
        data_dir=str(settings.root.resolve()),
    )
    path = state_file(settings)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(state))
    os.replace(tmp, path)


def read_state(settings: Settings, role: str) -> ServeState | None:
    """The state the serve that runs ``role`` first wrote, if it did."""
    try:
        return msgspec.json.decode(state_file(settings, role).read_bytes(), type=ServeState)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def check_ports(settings: Settings) -> None:
    """Raise AlreadyRunning if a process listens on one of the ports ``serve`` would use.

    The probe binds without SO_REUSEPORT: the kernel refuses that bind while any socket
    listens on the address, SO_REUSEPORT or not (SO_REUSEADDR lets a port whose old
    connections linger in TIME_WAIT be taken, as granian does).
    """
    for name, port in [("--port", settings.port), *_door_options(settings)]:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                holder = listening_pid(port)
                by = f"pid {holder}" if holder else "another process"
                raise AlreadyRunning(
                    f"{name} {port}: {settings.host}:{port} is in use by {by}"
                ) from None


def _door_options(settings: Settings) -> list[tuple[str, int]]:
    return [(f"--{door}-port", port) for door, port in sorted(settings.door_ports.items())]


def listening_pid(port: int) -> int | None:
    """The pid of a process of this user listening on TCP ``port``, if /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local_address is ADDR:PORT in hex; state 0A is LISTEN.
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def _pid_in(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    return None
