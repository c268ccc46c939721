"""The small HTTP vocabulary the doors share, over granian's RSGI protocol.

No framework: measured here, Starlette routing alone halves the requests per second a
bare handler reaches, and the doors need only a handful of routes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

JSON = "application/json"
JSON_HEADERS = [("content-type", JSON)]

# status, headers, body
Response = tuple[int, list[tuple[str, str]], bytes]
EMPTY_OBJECT = b"{}"

_json_encoder = msgspec.json.Encoder()


class Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    # Every (name, value), repeats included: cookies and X-Forwarded-For may come split.
    def items(self) -> Iterable[tuple[str, str]]: ...


class Scope(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def client(self) -> str: ...
    @property
    def authority(self) -> str | None: ...
    @property
    def headers(self) -> Headers: ...


class Protocol_(Protocol):
    async def __call__(self) -> bytes: ...
    def __aiter__(self) -> Any: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


class HTTPError(Exception):
    """An answer other than success, with a stable reason code for metrics and clients."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []
        # What was read of the request body, so a refused record still leaves a trace.
        self.body = body


class BodyTooLarge(HTTPError):
    def __init__(self, limit: int, prefix: bytes) -> None:
        super().__init__(
            413, "body_too_large", f"request body is larger than {limit} bytes", body=prefix
        )


class BodyTimeout(HTTPError):
    """408: the body stopped arriving, or took too long in all (edge/deadlines.py)."""

    def __init__(self, why: str) -> None:
        super().__init__(
            408,
            "body_timeout",
            f"the request body {why}; send it again, without pausing",
            # The rest of the body may still be on its way: the connection cannot be
            # reused, and saying so spares the client a request on a dying connection.
            headers=[("connection", "close")],
        )


class ClientGone(Exception):
    """The client closed its connection before its request was read: nobody to answer."""


def encode_json(obj: Any) -> bytes:
    return _json_encoder.encode(obj)


def error_body(code: str, message: str) -> bytes:
    return encode_json({"error": code, "message": message})


def error_response(e: HTTPError) -> Response:
    """An error as the ingest doors answer it: ``{"error": code, "message": …}``."""
    return e.status, [*JSON_HEADERS, *e.headers], error_body(e.code, e.message)


# A body this small is read whole in one call, granian's fastest way; a larger one piece
# by piece, so that its pauses can be timed (edge/deadlines.py).
ONE_READ_BYTES = 64 * 1024


async def _head(proto: Protocol_, size: int) -> bytes:
    """The first ``size`` bytes of a body that will not be read whole (fewer if it ends
    or stalls first: the refusal it goes with is answered either way)."""
    parts: list[bytes] = []
    got = 0
    if size <= 0:
        return b""
    try:
        async for chunk in proto:
            parts.append(chunk)
            got += len(chunk)
            if got >= size:
                break
    except HTTPError:  # the body stalled past its deadline
        pass
    return b"".join(parts)[:size]


async def read_body(scope: Scope, proto: Protocol_, limit: int, keep: int = 0) -> bytes:
    """Read the whole body, refusing (413) as soon as it passes ``limit`` bytes.

    A declared Content-Length over the limit is refused after reading only its first
    ``keep`` bytes (what the refusal's import-error row keeps); a chunked body is
    counted while it streams, so no more than ``limit`` bytes (plus one chunk) are ever
    held. A body that ends short of its Content-Length was abandoned by the client
    (``ClientGone``); one that stalls is a 408 that keeps what came of it.
    """
    declared = scope.headers.get("content-length")
    length = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise HTTPError(400, "bad_content_length", "Content-Length is not a number") from None
        if length > limit:
            raise BodyTooLarge(limit, await _head(proto, min(keep, limit)))
        if length <= ONE_READ_BYTES:
            # The server reads no more than Content-Length, so one call is safe.
            return await proto()
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit, b"".join(parts)[:limit])
            parts.append(chunk)
    except BodyTimeout as e:
        e.body = b"".join(parts)
        raise
    if length is not None and size != length:
        # granian ends the stream early, without an error, when the connection drops.
        raise ClientGone()
    return b"".join(parts)
