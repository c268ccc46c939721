"""A fake RSGI protocol for benches that drive ``EdgeApp`` in one process, without HTTP."""

from __future__ import annotations

from typing import Any


class FakeProto:
    """Hands the app one request body and insists on a 200."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __call__(self) -> bytes:
        return self._body

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        if status != 200:
            raise RuntimeError(f"answered {status}: {body!r}")
