"""Turning a request body into one record (a JSON object), or a clear 400.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import msgspec

from tdedge.edge.http import HTTPError
from tdedge.edge.nesting import deeper_than, too_deep

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

FORM = "application/x-www-form-urlencoded"


def media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def record_from_body(body: bytes, content_type: str | None, max_depth: int) -> bytes:
    """Return the record as compact JSON object bytes.

    ``application/x-www-form-urlencoded`` bodies (webhook senders use them) become a
    record of string columns; a repeated field keeps its last value. Anything else is
    read as JSON, whatever its declared type, because senders often omit or mislabel it
    — and a "form" body that starts with ``{`` or ``[`` is JSON too: that is what
    ``curl -d '{…}'`` sends without a Content-Type, and no form field starts that way.
    JSON nested deeper than ``max_depth`` is refused (``too_deep``).
    """
    if not body.strip():
        raise HTTPError(400, "empty_body", "request body is empty; send one JSON object")
    if media_type(content_type) == FORM and body.lstrip()[:1] not in (b"{", b"["):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "invalid_form", "form body is not valid UTF-8") from None
        fields = dict(parse_qsl(text, keep_blank_values=True))
        if not fields:
            raise HTTPError(400, "invalid_form", "form body has no fields")
        return _encoder.encode(fields)
    try:
        value = _decoder.decode(body)
    except msgspec.DecodeError as e:
        raise HTTPError(400, "invalid_json", f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise too_deep(max_depth) from None
    if not isinstance(value, dict):
        kind = type(value).__name__ if value is not None else "null"
        raise HTTPError(
            400, "not_an_object", f"request body must be one JSON object, got {_json_kind(kind)}"
        )
    if deeper_than(body, max_depth):
        raise too_deep(max_depth)
    # Re-encoding normalises whitespace and escapes; the loader reads it line by line.
    return _encoder.encode(value)


def _json_kind(python_type: str) -> str:
    return {
        "list": "an array",
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "bool": "a boolean",
        "null": "null",
    }.get(python_type, python_type)
