"""The ``serve`` that runs on a data dir: its lock, its state file, and the port check.

One ``serve`` per data dir: it holds ``run/serve.lock`` for as long as it runs, and
writes ``run/serve.json`` (pid, ports, doors, version) for ``tdedge status``. A second
``serve`` on the same data dir, or on a port some process listens on already, refuses
to start and says which process is in the way: granian's workers listen with
SO_REUSEPORT, so without this check the kernel would silently share the port's
connections between the two servers.
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

from tdedge.config import Settings


class ServeState(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    version: str
    started_at: float  # unix seconds
    host: str
    port: int
    scheme: str  # "http" or "https"
    door_ports: dict[str, int]  # dedicated door ports (records, p13n, cdp, api)
    roles: list[str]  # the background processes serve runs: loader, jobs, p13n-engine
    data_dir: str


class AlreadyRunning(Exception):
    """Another ``serve`` holds the data dir, or another process the port."""


def version() -> str:
    try:
        return metadata.version("tdedge")
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown"


def lock_file(settings: Settings) -> Path:
    return settings.root / "run" / "serve.lock"


def state_file(settings: Settings) -> Path:
    return settings.root / "run" / "serve.json"


def check_not_running(settings: Settings) -> None:
    """Raise AlreadyRunning if a ``serve`` holds the data dir (``claim`` makes sure)."""
    pid = running_pid(settings)
    if pid is not None:
        raise AlreadyRunning(_running_message(settings, pid if pid > 0 else None))


def _running_message(settings: Settings, pid: int | None) -> str:
    return (
        f"another tdedge serve (pid {pid or 'unknown'}) runs on the data dir "
        f"{settings.root.resolve()}; stop it first (tdedge status shows it)"
    )


def claim(settings: Settings) -> int:
    """Take the data dir's serve lock; its fd (held until the process ends).

    Raises AlreadyRunning naming the pid of the ``serve`` that holds it.
    """
    path = lock_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd)
        os.close(fd)
        raise AlreadyRunning(_running_message(settings, holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def running_pid(settings: Settings) -> int | None:
    """The pid of the ``serve`` holding the data dir, or None when none runs."""
    path = lock_file(settings)
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


def write_state(settings: Settings, roles: list[str]) -> None:
    state = ServeState(
        pid=os.getpid(),
        version=version(),
        started_at=time.time(),
        host=settings.host,
        port=settings.port,
        scheme="https" if settings.tls_cert else "http",
        door_ports=dict(settings.door_ports),
        roles=roles,
        data_dir=str(settings.root.resolve()),
    )
    path = state_file(settings)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(state))
    os.replace(tmp, path)


def read_state(settings: Settings) -> ServeState | None:
    try:
        return msgspec.json.decode(state_file(settings).read_bytes(), type=ServeState)
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
