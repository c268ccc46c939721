"""A real PostgreSQL server for the tests: Debian's PostgreSQL 15, ``initdb`` into a
temporary directory, listening on a free loopback port only, stopped at the end.

PostgreSQL refuses to run as root; as root (CI, this machine) the server runs as the
``postgres`` user that Debian's package creates. Each test that asks gets a database of
its own on the one server, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 60.0


def available() -> bool:
    return (BIN / "postgres").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Postgres:
    def __init__(self, port: int, user: str) -> None:
        self.port = port
        self.user = user
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def start(root: Path, detached: bool = False) -> tuple[Postgres, subprocess.Popen[bytes]]:
    """Make a cluster in ``root`` and start its server; stop it with ``stop(root)``.
    ``detached``: in a session of its own, to outlive this process (scripts/cluster)."""
    data = root / "data"
    run_as = _as_server_user()
    user = "postgres" if run_as else os.environ.get("USER", "postgres")
    if run_as:
        shutil.chown(root, "postgres")
    subprocess.run(
        [*run_as, str(BIN / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = root / "server.log"
    proc = subprocess.Popen(
        [
            *run_as,
            str(BIN / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(root),
            # Throw-away data: no fsync makes the tests fast and changes no answer.
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=detached,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            ready = subprocess.run(
                [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    except BaseException:
        stop(root)
        raise
    return Postgres(port, user), proc


def stop(root: Path) -> None:
    """A fast shutdown of the server started in ``root``: clients still connected (a
    pool) are disconnected; waits until it is down."""
    subprocess.run(
        [
            *_as_server_user(),
            str(BIN / "pg_ctl"),
            "stop",
            "-D",
            str(root / "data"),
            "-m",
            "fast",
            "-w",
        ],
        capture_output=True,
        check=False,
    )


@contextmanager
def server() -> Iterator[Postgres]:
    """Start a throw-away server; stop it and remove its files at the end."""
    root = Path(tempfile.mkdtemp(prefix="tdedge-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        found, proc = start(root)
        yield found
    finally:
        stop(root)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)
