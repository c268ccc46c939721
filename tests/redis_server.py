"""A real Redis server for the tests: Debian's Redis 7, in a temporary directory,
listening on a free loopback port only, stopped at the end.

Append-only file with ``appendfsync everysec``: the setting docs/redis-profiles.md
recommends, so the tests run what operators run. Each test that asks gets a logical
database of its own (``/1``, ``/2``…), flushed first, so tests never see each other's
profiles.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 30.0
# Redis's default number of logical databases; the tests cycle through them.
DATABASES = 16


def available() -> bool:
    return shutil.which("redis-server") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, port: int, root: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.root = root
        self.proc = proc
        self._dbs = itertools.cycle(range(1, DATABASES))

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def crash_and_restart(self) -> None:
        """kill -9, then start again on the same files and port."""
        self.proc.kill()
        self.proc.wait()
        self.proc = _start(self.root, self.port)
        _wait_ready(self.proc, self.port, self.root)

    def new_database(self) -> str:
        """An empty logical database; its URL."""
        import redis

        db = next(self._dbs)
        with redis.Redis(host="127.0.0.1", port=self.port, db=db) as client:
            client.flushdb()
        return self.url(db)


def start(root: Path, fsync: str = "everysec") -> tuple[subprocess.Popen[bytes], int]:
    """A server on a free port with its files in ``root``, ready to answer: its process
    and port. ``fsync`` is the ``appendfsync`` setting (the benches compare ``always``)."""
    port = free_port()
    proc = _start(root, port, fsync)
    try:
        _wait_ready(proc, port, root)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def _start(root: Path, port: int, fsync: str = "everysec") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(root),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            fsync,
            "--daemonize",
            "no",
            "--logfile",
            str(root / "server.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, root: Path) -> None:
    import redis

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
                if client.ping():
                    return
        except redis.RedisError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log = root / "server.log"
            text = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"Redis did not start: {text}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def server() -> Iterator[Redis]:
    """Start a throw-away server; stop it and remove its files at the end."""
    root = Path(tempfile.mkdtemp(prefix="tdedge-redis-"))
    try:
        proc, port = start(root)
        server = Redis(port, root, proc)
        try:
            yield server
        finally:
            _stop(server.proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
