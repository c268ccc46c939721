"""Helpers for the p13n end-to-end tests: a server with a dedicated p13n port and a
configuration applied through the real CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tests.e2e.conftest import Server, free_port

MEDIA = "application/vnd.treasuredata.v1+json"
CLIENT = "42a508e2-d9b1-4baa-9eb2-6c3fb8bd5e16"

CONFIG = (Path(__file__).parent / "data" / "p13n.yaml").read_text()


class P13n:
    """A running server, its p13n port and the credentials the tests use."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.tokens: dict[str, str] = {}

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the p13n port did not come up")

    def apply(self, text: str, tmp: Path) -> None:
        path = tmp / f"p13n-{time.monotonic_ns()}.yaml"
        path.write_text(text)
        self.server.cli("p13n", "apply", str(path))

    def token(self, name: str, *args: str) -> str:
        token = self.server.cli("p13n", "tokens", "create", *args).stdout.strip()
        self.tokens[name] = token
        return token

    def post(
        self,
        event: Any,
        *,
        token: str | None = None,
        key: str | None = None,
        path: str = "/retail/pageviews",
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        h = {"Content-Type": MEDIA}
        h["Authorization"] = f"TD1 {key or self.server.master_key}"
        h["WP13n-Token"] = token or self.tokens["web"]
        for name, value in (headers or {}).items():
            for existing in [k for k in h if k.lower() == name.lower()]:
                del h[existing]
            if value:
                h[name] = value
        body = content if content is not None else msgspec.json.encode(event)
        return httpx.post(f"{self.url}{path}", content=body, headers=h, timeout=30)

    def profile(self, *pairs: str, service: str = "web", profiles: str = "") -> dict[str, Any]:
        where = ["--profiles", profiles] if profiles else []
        out = self.server.cli("p13n", "profile", "--service", service, *where, *pairs).stdout
        found: dict[str, Any] = msgspec.json.decode(out)
        return found


def start(make_server: Any, extra: list[str] | None = None, data_dir: Path | None = None) -> P13n:
    port = free_port()
    server: Server = make_server(["--p13n-port", str(port), *(extra or [])], data_dir=data_dir)
    p = P13n(server, port)
    p.wait_ready()
    return p
