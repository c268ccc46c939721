"""What edge workers and the engine process say to each other over the engine's socket.

A frame is a 4-byte little-endian length and a msgpack array: of ``Ask`` from a worker,
of ``Answer`` from the engine. Each side sends one frame per event-loop iteration with
everything that became ready in it, so a busy worker pays one write and one decode
per group of requests, not per request.

An Ask carries the request body as the worker received it (one JSON object, already
checked) and the identity keys it found there, and the generation of the
configuration it checked the token against: an engine that has not seen that
generation yet reloads before deciding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import msgspec

log = logging.getLogger("tdedge.p13n")

# A frame larger than this is a broken peer, not a busy one: a worker's frame holds the
# bodies of at most its concurrency limit of requests (limits.concurrency).
MAX_FRAME_BYTES = 256 * 1024 * 1024
_HEADER = 4

# Answer codes besides OK are the door's codes: 1001-1005 and 9999 (500), and 3004
# (400) for a body the engine cannot read as the worker did.
OK = 0


class Ask(msgspec.Struct, array_like=True, gc=False):
    id: int
    generation: int  # of the p13n configuration the worker checked against
    service: str
    table: str
    event: bytes  # the request body: one JSON object
    keys: list[str]  # the event's identity keys, as the worker found them
    public: bool


class Answer(msgspec.Struct, array_like=True, gc=False):
    id: int
    code: int  # OK, or the error code the door answers with
    body: bytes  # the offers, or the error message


_encoder = msgspec.msgpack.Encoder()
_asks = msgspec.msgpack.Decoder(list[Ask])
_answers = msgspec.msgpack.Decoder(list[Answer])


class FrameError(Exception):
    """The peer sent something that is not a frame: the connection is closed."""


def frame(items: list[Ask] | list[Answer]) -> bytes:
    payload = _encoder.encode(items)
    return len(payload).to_bytes(_HEADER, "little") + payload


def decode_asks(payload: bytes) -> list[Ask]:
    try:
        return _asks.decode(payload)
    except msgspec.DecodeError as e:
        raise FrameError(f"not a list of asks: {e}") from None


def decode_answers(payload: bytes) -> list[Answer]:
    try:
        return _answers.decode(payload)
    except msgspec.DecodeError as e:
        raise FrameError(f"not a list of answers: {e}") from None


class Frames:
    """Cuts a byte stream into frame payloads."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        buffer = self._buffer
        buffer += data
        at = 0
        end = len(buffer)
        while end - at >= _HEADER:
            size = int.from_bytes(buffer[at : at + _HEADER], "little")
            if size > MAX_FRAME_BYTES:
                raise FrameError(f"a frame of {size} bytes")
            if end - at - _HEADER < size:
                break
            yield bytes(buffer[at + _HEADER : at + _HEADER + size])
            at += _HEADER + size
        del buffer[:at]


class FramedProtocol(asyncio.Protocol):
    """A connection that sends and receives frames (both sides of the engine's socket).

    Subclasses handle each frame's payload in ``received``; a payload that is not a
    frame (``FrameError``) closes the connection, which the peer sees as lost.
    """

    def __init__(self) -> None:
        self._frames = Frames()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._frames.feed(data):
                self.received(payload)
        except FrameError as e:
            log.error("p13n engine socket: not a frame", extra={"error": str(e)})
            self.close()

    def received(self, payload: bytes) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def send(self, items: list[Ask] | list[Answer]) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(frame(items))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def unix_address(path: Path) -> tuple[str, int | None]:
    """An address ``bind``/``connect`` accept for ``path``, and a directory fd to close
    after the call (or None).

    A Unix socket's path is limited to 107 bytes; a data dir nested deeper is reached
    through its directory's descriptor (``/proc/self/fd/N/name``), which Linux resolves.
    """
    if len(os.fsencode(path)) < 100:
        return str(path), None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def connect_unix(path: Path) -> socket.socket:
    """A connected, non-blocking Unix stream socket (OSError when nobody listens)."""
    address, fd = unix_address(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def listening(path: Path) -> bool:
    """Whether a process listens on ``path`` (a connection that is closed at once)."""
    address, fd = unix_address(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)  # a full backlog answers EAGAIN at once: listening, busy
    try:
        sock.connect(address)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.close()
        if fd is not None:
            os.close(fd)
    return True


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix stream socket at ``path``, owner-only (replacing a stale one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    address, fd = unix_address(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file: read-write for the owner only
    try:
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
        if fd is not None:
            os.close(fd)
    return sock
