"""Request parameters: query strings, urlencoded forms (Ruby client), multipart (Python).

td-client-python posts its fields through urllib3, which encodes them as
``multipart/form-data``; the Ruby client sends ``application/x-www-form-urlencoded``.
"""

from __future__ import annotations

import re
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from tdedge.api.wire import ApiError

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def query_params(query_string: str) -> dict[str, str]:
    return dict(parse_qsl(query_string, keep_blank_values=True))


def form_fields(body: bytes, content_type: str | None) -> dict[str, str]:
    """The fields of a POST body, whichever of the two encodings it uses."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if not body:
        return {}
    if media == "multipart/form-data":
        return _multipart(body, content_type or "")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_form", "form body is not valid UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def _multipart(body: bytes, content_type: str) -> dict[str, str]:
    if _BOUNDARY.search(content_type) is None:
        raise ApiError(400, "invalid_form", "multipart body without a boundary")
    # The email parser reads MIME multipart bodies; the header line makes it one.
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        charset = part.get_content_charset() or "utf-8"
        try:
            fields[name] = raw.decode(charset, "replace")
        except LookupError:
            raise ApiError(
                400, "invalid_form", f"form field {name!r} has an unknown charset {charset!r}"
            ) from None
    return fields
