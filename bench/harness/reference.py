"""The references a bench measures tdedge against, in the same run: nginx (the ceiling
on this machine) and a bare granian app (the floor under any Python edge on granian)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import BenchError
from harness.children import Child, Children
from harness.ports import HOST, free_port, wait_answering

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{ {location} }}
    }}
}}
"""

# What nginx answers every request with (the body of its one location).
NGINX_JSON = "default_type application/json; return 200 '{}';"
NGINX_EMPTY_GIF = "empty_gif; add_header Cache-Control no-store;"


@dataclass
class Reference:
    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pgid(self) -> int:
        return self.child.pid


def which(tool: str) -> str | None:
    """``tool`` on the PATH, or in the sbin directories a user's PATH may lack."""
    return shutil.which(tool) or next(
        (str(Path(d) / tool) for d in ("/usr/sbin", "/sbin") if (Path(d) / tool).exists()),
        None,
    )


def check_tools(*tools: str) -> None:
    """BenchError naming the packages to install unless every tool is there."""
    missing = [tool for tool in tools if which(tool) is None]
    if missing:
        pkgs = " ".join("nginx-light" if t == "nginx" else t for t in missing)
        raise BenchError(
            f"missing: {', '.join(missing)}. Install with:\n"
            f"  apt-get install -y {pkgs}    (as root; nginx-light or nginx both work)"
        )


@contextlib.contextmanager
def nginx(
    children: Children, tmp: Path, workers: str, location: str = NGINX_JSON
) -> Iterator[Reference]:
    """nginx (``worker_processes workers``, no access log) answering every request with
    ``location``, until the block ends."""
    ndir = tmp / "nginx"
    ndir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = ndir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(workers=workers, dir=ndir, host=HOST, port=port, location=location)
    )
    argv = [which("nginx") or "nginx", "-p", str(ndir), "-c", str(conf)]
    child = children.start("nginx", argv, tmp)
    try:
        wait_answering(child, f"http://{HOST}:{port}/", 15.0)
        yield Reference(child, port)
    finally:
        children.stop(child)


@contextlib.contextmanager
def bare_granian(children: Children, tmp: Path, app: str, workers: int) -> Iterator[Reference]:
    """granian (RSGI, uvloop, ``workers`` workers) serving ``app``, the source of a module
    whose ``app`` is an RSGI application, until the block ends."""
    gdir = tmp / "granian-bare"
    gdir.mkdir(parents=True, exist_ok=True)
    (gdir / "bare_rsgi.py").write_text(app)
    port = free_port()
    argv = [sys.executable, "-m", "granian", "--interface", "rsgi", "--host", HOST]
    argv += ["--port", str(port), "--workers", str(workers), "--loop", "uvloop"]
    argv += ["--backlog", "2048", "--log-level", "warning", "bare_rsgi:app"]
    env = {**os.environ, "PYTHONPATH": str(gdir)}
    child = children.start("granian-bare", argv, tmp, env=env)
    try:
        wait_answering(child, f"http://{HOST}:{port}/", 30.0)
        yield Reference(child, port)
    finally:
        children.stop(child)
