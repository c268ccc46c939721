"""What a refused request leaves for operators: a capped, loadable copy of its body.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

# U+FFFD in UTF-8: what the loader shows for bytes that are not text anyway.
_REPLACEMENT = "\ufffd".encode()


def kept_body(body: bytes | memoryview, limit: int) -> bytes:
    """The first ``limit`` bytes of ``body``, NUL bytes shown as U+FFFD.

    A refused body may be anything (gzip, binary); the import errors keep it as text.
    NUL bytes are never text in a request body (JSON escapes them), and runs of them
    made the lake's commit of the row take seconds: DuckLake's inlined rows handle each
    NUL at a cost that grows with the string (64 KiB of them took ~4 s per row here).
    """
    kept = bytes(body[:limit])
    if b"\x00" in kept:
        kept = kept.replace(b"\x00", _REPLACEMENT)[:limit]
    return kept
