"""Job results: one gzipped msgpack stream per job, one array per row.

That is TD's ``msgpack.gz`` result format, so ``msgpack.gz`` (with Range) is served
as it is stored (results/store.py says where) and ``result_size`` is its size;
``msgpack`` is the same bytes inflated; ``json`` (one JSON array per line), ``csv``
and ``tsv`` are rendered from it.
Values are what Presto's result carries (query/values.py).
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO

import msgspec

FORMATS = ("json", "msgpack", "msgpack.gz", "csv", "tsv")
# Level 1: results are written while a client waits; size matters less than time here.
GZIP_LEVEL = 1

_encoder = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()


class ResultTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the result is {size} bytes inflated, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class ResultWriter:
    """Writes rows, gzipped, into ``file``; a result store (results/store.py)
    publishes the finished file where readers find it, or discards it."""

    def __init__(
        self, file: BinaryIO, publish: Callable[[], int], discard: Callable[[], None]
    ) -> None:
        self._gz = gzip.GzipFile(fileobj=file, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        self._publish = publish
        self._discard = discard
        self.rows = 0

    def write(self, rows: list[list[Any]]) -> None:
        if not rows:
            return
        # One encode call for the whole batch, then drop the array header: the file is
        # the rows back to back, as TD's msgpack results are.
        packed = _encoder.encode(rows)
        self._gz.write(memoryview(packed)[_array_header_size(len(rows)) :])
        self.rows += len(rows)

    def close(self) -> int:
        """Finish and publish the result; returns its size (TD's ``result_size``)."""
        self._gz.close()
        return self._publish()

    def abort(self) -> None:
        self._gz.close()
        self._discard()


def _array_header_size(n: int) -> int:
    if n < 16:
        return 1
    return 3 if n < 0x10000 else 5


# Reading: from the whole msgpack.gz result, read from its store.
def inflated_size(trailer: bytes) -> int:
    """The msgpack size, from the gzip trailer (its last 4 bytes; exact below 4 GiB, as
    results here are)."""
    return int(struct.unpack("<I", trailer[-4:])[0])


def check_size(trailer: bytes, limit: int) -> None:
    """Refuse a result that inflates past ``limit`` before it is read whole."""
    size = inflated_size(trailer)
    if size > limit:
        raise ResultTooLarge(size, limit)


def inflate(gz: bytes, limit: int) -> bytes:
    if gz:
        check_size(gz, limit)
    return zlib.decompress(gz, wbits=31) if gz else b""


def rows(gz: bytes, count: int, limit: int) -> list[list[Any]]:
    """Every row; ``count`` is the job's num_records."""
    body = inflate(gz, limit)
    # The rows back to back are one msgpack array without its header: put one back.
    decoded: list[list[Any]] = msgspec.msgpack.decode(b"\xdd" + struct.pack(">I", count) + body)
    return decoded


def render(
    gz: bytes, fmt: str, count: int, columns: Sequence[str], header: bool, limit: int
) -> bytes:
    """The whole result in ``fmt`` (not msgpack.gz, which is served as stored)."""
    if fmt == "msgpack":
        return inflate(gz, limit)
    data = rows(gz, count, limit)
    if fmt == "json":
        return b"".join(_json.encode(row) + b"\n" for row in data)
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows(_text_rows(data))
    body = out.getvalue().encode()
    if len(body) > limit:
        raise ResultTooLarge(len(body), limit)
    return body


def _text_rows(data: Iterable[list[Any]]) -> Iterable[list[str]]:
    for row in data:
        yield [_text(v) for v in row]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return _json.encode(value).decode()
    return str(value)
