"""Inflating gzip and deflate request bodies with bounded work.

``Content-Encoding: deflate`` is one zlib stream (RFC 9110 §8.4.1.2), as the pre-1.0
mobile SDKs send (``inflate``); a raw deflate stream, which some clients send under
that name, is taken too. The rest of this docstring is about gzip, whose members make
it the harder case; a deflate stream is one member without them.

A gzip body may be several members back to back (RFC 1952 §2.2); the mobile SDKs send
one. Whatever the body, the work stays proportional to its size and its inflated size,
each of them capped:

- at most ``max_members`` members: a 5 MiB body of empty 20-byte members would
  otherwise cost a decompressor per 20 bytes, for nothing (refused: 400 invalid_gzip);
- zlib gets at most ``FEED_BYTES`` of input per call and gives at most ``STEP_BYTES`` of
  output, so what it copies per call (its unconsumed tail or the input past a member's
  end) is bounded, and the input is never copied whole again per member — doing so made
  the cost grow with the square of the member count;
- the output is refused (413) as soon as it would pass ``limit``: a zip bomb costs a few
  MiB, never its inflated size.

Pure functions: no I/O. Large bodies are inflated off the event loop by the caller.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator, Iterator
from typing import Any

from tdedge.edge.http import BodyTooLarge, HTTPError

# zlib's window bits for "gzip header and trailer, largest window".
GZIP_WBITS = 16 + zlib.MAX_WBITS
# ... for "zlib header and trailer" and for "raw deflate, no header".
ZLIB_WBITS = zlib.MAX_WBITS
RAW_WBITS = -zlib.MAX_WBITS
INVALID_DEFLATE = "invalid_deflate"
FEED_BYTES = 64 * 1024
# A member's first feed is small and each next one twice as large: a tiny member then
# costs a tiny copy of what follows it, a large one few calls.
FIRST_FEED_BYTES = 1024
STEP_BYTES = 256 * 1024


def gunzip(body: bytes, limit: int, max_members: int) -> bytes:
    """The inflated body (see ``chunks``)."""
    return b"".join(chunks(body, limit, max_members))


def chunks(body: bytes, limit: int, max_members: int) -> Iterator[bytes]:
    """The inflated body, ``STEP_BYTES`` at most at a time: 413 as soon as it passes
    ``limit`` bytes, 400 ``invalid_gzip`` for a body that is not gzip, is cut short, or
    holds more than ``max_members`` members. An empty body inflates to nothing.

    Zero bytes after the last member are ignored, as gzip(1) does with tape padding.
    """
    size = 0
    view = memoryview(body)
    end = len(view)
    at = 0
    members = 0
    try:
        while at < end:
            if members and body[at] == 0 and body.count(0, at) == end - at:
                break
            members += 1
            if members > max_members:
                raise HTTPError(
                    400,
                    "invalid_gzip",
                    f"the gzip body has more than {max_members} members (gzip members cost a "
                    "decompressor each): send fewer, larger ones",
                )
            inflater = zlib.decompressobj(GZIP_WBITS)
            feed = FIRST_FEED_BYTES
            while not inflater.eof:
                if at >= end:
                    raise HTTPError(400, "invalid_gzip", "gzip body is truncated")
                pending: bytes | memoryview = view[at : at + feed]
                at += len(pending)
                feed = min(2 * feed, FEED_BYTES)
                size = yield from _steps(inflater, pending, size, limit, "invalid_gzip", "gzip")
            # Input past this member's end belongs to the next one.
            at -= len(inflater.unused_data)
    except zlib.error as e:
        raise HTTPError(400, "invalid_gzip", f"body is not valid gzip: {e}") from None


def _steps(
    inflater: Any, pending: bytes | memoryview, size: int, limit: int, code: str, what: str
) -> Generator[bytes, None, int]:
    """Inflate one feed of input in steps of ``STEP_BYTES`` at most, until it is used up
    or the stream ends; returns the inflated size so far. 413 past ``limit``; 400
    ``code`` for input that inflates to nothing and is not consumed."""
    while pending and not inflater.eof:
        chunk = inflater.decompress(pending, min(STEP_BYTES, limit + 1 - size))
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, b"")
        if chunk:
            yield chunk
        tail = inflater.unconsumed_tail
        if not chunk and len(tail) == len(pending):
            raise HTTPError(400, code, f"{what} body does not inflate")
        pending = tail
    return size


def inflate(body: bytes, limit: int) -> bytes:
    """A deflate body inflated: 413 as soon as it passes ``limit`` bytes, 400
    ``invalid_deflate`` for a body that is neither a zlib nor a raw deflate stream, is
    cut short, or has anything but zero bytes after its end. Empty inflates to empty."""
    if not body:
        return b""
    # A zlib stream starts with a header whose 16-bit value is a multiple of 31 and
    # names the deflate method; a raw stream may look like one only by chance, and
    # then fails to inflate as zlib (its checksum or its blocks), and is tried raw.
    wbits = ZLIB_WBITS if _zlib_header(body) else RAW_WBITS
    try:
        return b"".join(_stream(body, limit, wbits))
    except HTTPError as e:
        if wbits == RAW_WBITS or e.code != INVALID_DEFLATE:
            raise
    return b"".join(_stream(body, limit, RAW_WBITS))


def _zlib_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def _stream(body: bytes, limit: int, wbits: int) -> Iterator[bytes]:
    """One deflate stream of ``body``, ``STEP_BYTES`` at most at a time (see ``chunks``)."""
    inflater = zlib.decompressobj(wbits)
    view = memoryview(body)
    size = at = 0
    try:
        while not inflater.eof:
            if at >= len(view):
                raise HTTPError(400, INVALID_DEFLATE, "deflate body is truncated")
            pending: bytes | memoryview = view[at : at + FEED_BYTES]
            at += len(pending)
            size = yield from _steps(inflater, pending, size, limit, INVALID_DEFLATE, "deflate")
    except zlib.error as e:
        raise HTTPError(400, INVALID_DEFLATE, f"body is not valid deflate: {e}") from None
    rest = inflater.unused_data + bytes(view[at:])
    if rest.count(0) != len(rest):
        raise HTTPError(400, INVALID_DEFLATE, "data after the end of the deflate stream")


def head(body: bytes, n: int, wbits: int = GZIP_WBITS) -> bytes:
    """At most the first ``n`` inflated bytes of a gzip ``body`` (or another stream, by
    its ``wbits``), for an import-error row of a request refused before it was inflated;
    the body's own first ``n`` bytes when it does not inflate. Never raises: what is
    kept of a refusal is best effort."""
    inflater = zlib.decompressobj(wbits)
    try:
        found = inflater.decompress(body[: n + FEED_BYTES], n)
    except zlib.error:
        found = b""
    return found if found else body[:n]
