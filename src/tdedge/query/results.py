"""Job results on disk: one gzipped msgpack stream per job, one array per row.

That is TD's ``msgpack.gz`` result format, so ``msgpack.gz`` (with Range) is served
straight from the file and ``result_size`` is its size; ``msgpack`` is the same bytes
inflated; ``json`` (one JSON array per line), ``csv`` and ``tsv`` are rendered from it.
Values are what Presto's result carries (query/values.py).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
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


def result_path(results_dir: Path, job_id: int) -> Path:
    return results_dir / f"{job_id}.msgpack.gz"


def expire_results(results_dir: Path, written_before: float) -> int:
    """Delete result files (and temporary files a dead runner left) last written before
    ``written_before`` (unix seconds); returns how many went.

    By the file's own time, so it needs nothing from the job table: a result is written
    once, when its job ends.
    """
    removed = 0
    try:
        entries = list(os.scandir(results_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if ".msgpack" not in entry.name:  # N.msgpack.gz, or N.msgpack.tmpPID
            continue
        try:
            if entry.stat().st_mtime < written_before:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # removed meanwhile
    return removed


class ResultWriter:
    """Writes rows to ``path`` through a temporary file, renamed into place on ``close``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tmp = path.with_suffix(f".tmp{os.getpid()}")
        self._file: BinaryIO = self._tmp.open("wb")
        self._gz = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
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
        """Finish the file; returns its size (TD's ``result_size``)."""
        self._gz.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        self._gz.close()
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def _array_header_size(n: int) -> int:
    if n < 16:
        return 1
    return 3 if n < 0x10000 else 5


# Reading.
def inflated_size(path: Path) -> int:
    """The msgpack size, from the gzip trailer (exact below 4 GiB, as results here are)."""
    with path.open("rb") as f:
        f.seek(-4, io.SEEK_END)
        return int(struct.unpack("<I", f.read(4))[0])


def read_range(path: Path, start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` (inclusive) of the msgpack.gz file."""
    with path.open("rb") as f:
        f.seek(start)
        return f.read(end - start + 1)


def read_msgpack(path: Path, limit: int) -> bytes:
    size = inflated_size(path)
    if size > limit:
        raise ResultTooLarge(size, limit)
    with path.open("rb") as f:
        return zlib.decompress(f.read(), wbits=31)


def rows(path: Path, count: int, limit: int) -> list[list[Any]]:
    """Every row; ``count`` is the job's num_records."""
    body = read_msgpack(path, limit)
    # The rows back to back are one msgpack array without its header: put one back.
    decoded: list[list[Any]] = msgspec.msgpack.decode(b"\xdd" + struct.pack(">I", count) + body)
    return decoded


def render(
    path: Path, fmt: str, count: int, columns: Sequence[str], header: bool, limit: int
) -> bytes:
    """The whole result in ``fmt`` (not msgpack.gz, which is served from the file)."""
    if fmt == "msgpack":
        return read_msgpack(path, limit)
    data = rows(path, count, limit)
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
