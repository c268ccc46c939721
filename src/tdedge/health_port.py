"""The health port of a node that runs no edge: ``/healthz``, ``/readyz`` and
``/metrics`` on ``--port``, and nothing else.

A node that only loads, runs query jobs or runs the p13n engine serves no door, but
operators watch every node the same way: a liveness probe, a readiness check that
turns 503 when one of its roles stops beating (readiness.py), and its metrics. A small
threaded server in ``serve`` itself is enough for that: it answers probes, not traffic.
Every other path is a 404 that says the node has no edge.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from tdedge import readiness
from tdedge.config import Settings

log = logging.getLogger("tdedge.health")

JSON = "application/json"


def answer(settings: Settings, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body for a GET of ``path``."""
    if path == "/healthz":
        return 200, JSON, b'{"status":"ok"}'
    if path == "/readyz":
        problems, details = readiness.role_problems(settings, time.time())
        body = {"ready": not problems, "problems": problems, **details}
        return (503 if problems else 200), JSON, msgspec.json.encode(body)
    if path == "/metrics":
        from tdedge import metrics

        return 200, "text/plain; version=0.0.4; charset=utf-8", metrics.exposition()
    roles = ", ".join(settings.roles)
    refusal = {
        "error": "no_edge",
        "message": f"this node runs {roles} and no edge (--roles): "
        "only /healthz, /readyz and /metrics answer here",
    }
    return 404, JSON, msgspec.json.encode(refusal)


# Connections answered at once; past that a new one is closed unanswered. Probes come a
# few a second: a client holding connections open must not make a thread for each.
MAX_CONNECTIONS = 32


class _BoundedServer(ThreadingHTTPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve(settings: Settings, stopping: threading.Event) -> None:
    """Answer on ``settings.port`` until SIGTERM or SIGINT (then ``stopping`` is set).

    No drain: no load balancer sends this node traffic to move elsewhere first."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "tdedge"
        timeout = 10  # seconds a connection may take to send its request

        def do_GET(self) -> None:
            status, content_type, body = answer(settings, self.path.split("?", 1)[0])
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format % args)  # probes every few seconds: not worth a log line

    httpd = _BoundedServer((settings.host, settings.port), Handler)
    httpd.daemon_threads = True
    if settings.tls_cert and settings.tls_key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        # The handshake in the connection's own thread: one silent client must not hold
        # the accepting one.
        httpd.socket = context.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )

    def stop(*_: Any) -> None:
        stopping.set()
        # shutdown() waits for serve_forever to return: not from the thread that runs it.
        threading.Thread(target=httpd.shutdown, name="health-stop", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
