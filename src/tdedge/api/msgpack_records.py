"""A stream of msgpack maps split into records, in bounded memory whatever it holds.

The bulk-import door (api/bulk_import.py) reads an upload as it inflates. msgpack's
Unpacker decodes a record as its bytes arrive, and keeps what it has built of one not
finished yet, so here a record is stopped before it grows:

- a record of up to ``max_record`` bytes of msgpack is decoded (the Unpacker's strings
  and containers bounded by the same) and re-encoded as the JSON object the loader
  reads; if that JSON passes ``max_record`` too, the record is refused alone
  (``too_large``), its first 64 KiB kept;
- a larger record is never decoded: its bytes go to a ``Skipper``, which walks msgpack
  headers without building anything (a string is passed over by its length, a run of
  one-byte values in one regular-expression step) until the record ends. It is refused
  alone, with its size; the upload's other records load;
- walking costs Python time for every value that is not one byte long, so an upload
  whose oversized records hold more than ``MAX_SKIPPED_VALUES`` of those between them
  is refused whole (413): about a second of walking at most.

The most held at once is one record's bytes (``max_record`` plus a feed step) and what
msgpack builds of them: at worst about 64 times as much, for a record of empty maps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec

from tdedge.api.wire import ApiError
from tdedge.edge.nesting import TOO_DEEP, deeper_than

# Bytes handed to the decoder at once.
FEED_STEP = 64 * 1024
MAX_SKIPPED_VALUES = 2_000_000
RECORD_TOO_LARGE = "record_too_large"
# What an import error keeps of an oversize record: its first 64 KiB of JSON, as the
# doors keep of a refused body (Settings.refused_keep_bytes).
KEPT_BYTES = 64 * 1024

_json = msgspec.json.Encoder(enc_hook=lambda v: _jsonable(v))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, msgpack.ExtType):
        return None
    if isinstance(value, msgpack.Timestamp):
        return value.seconds
    raise TypeError(f"cannot store a {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Record:
    json: bytes  # the JSON object; when too large, its first 64 KiB or a summary
    too_large: bool = False


def records(chunks: Iterable[bytes], max_record: int, max_depth: int) -> Iterator[Record]:
    """Each msgpack map of the stream ``chunks`` as a Record (see the module docstring);
    400 for what is not msgpack maps or nests deeper than ``max_depth`` (as the doors
    refuse such JSON), 413 when skipping would cost too much."""
    reader = _Reader(max_record, max_depth)
    for chunk in chunks:
        view = memoryview(chunk)
        for at in range(0, len(view), FEED_STEP):
            yield from reader.feed(view[at : at + FEED_STEP])
    reader.finish()


class _Reader:
    def __init__(self, max_record: int, max_depth: int) -> None:
        self._max = max_record
        self._max_depth = max_depth
        self._unpacker = self._new_unpacker()
        self._base = 0  # the Unpacker's position where ``_held`` starts
        self._held = bytearray()  # the bytes of the record being decoded, so far
        self._skipper: Skipper | None = None
        self._walked = 0  # values walked by skippers before this one
        self._index = 0  # the record being read, from 0

    def _new_unpacker(self) -> msgpack.Unpacker:
        # No container within the cap holds more elements than this (each takes at
        # least two bytes of JSON), nor any string more bytes than the cap.
        elements = max(1, self._max // 2)
        self._base = 0
        return msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            max_buffer_size=self._max + 2 * FEED_STEP,
            max_str_len=self._max,
            max_bin_len=self._max,
            max_ext_len=self._max,
            max_array_len=elements,
            max_map_len=elements,
        )

    def feed(self, data: memoryview) -> Iterator[Record]:
        if self._skipper is not None:
            end = self._skipper.feed(data)
            self._check(self._skipper)
            if end is None:
                return
            yield self._skipped()
            data = data[end:]
        if data:
            yield from self._decode(data)

    def _decode(self, data: memoryview) -> Iterator[Record]:
        self._held += data
        try:
            self._unpacker.feed(data)
            for item in self._unpacker:
                yield self._record(item)
        except msgpack.BufferFull:
            pass  # the record being read is too large: skip it, below
        except ValueError as e:  # msgpack's limits and malformed data alike
            if "exceeds max_" not in str(e):
                raise self._invalid(f"the body is not msgpack records: {e}") from None
        except TypeError as e:
            raise ApiError(400, "invalid_record", f"record {self._index}: {e}") from None
        else:
            if len(self._held) <= self._max:
                return
        # Never decoded further: walked from its first byte, held here so far.
        held, self._held = self._held, bytearray()
        self._unpacker = self._new_unpacker()
        self._skipper = Skipper()
        yield from self.feed(memoryview(held))

    def _record(self, item: Any) -> Record:
        if not isinstance(item, dict):
            raise ApiError(400, "not_an_object", "every msgpack record must be a map")
        at = self._unpacker.tell()
        size, self._base = at - self._base, at
        del self._held[:size]
        try:
            data = _json.encode({str(k): v for k, v in item.items()})
        except RecursionError:
            raise self._too_deep() from None
        if deeper_than(data, self._max_depth):
            raise self._too_deep()
        self._index += 1
        if size > self._max or len(data) > self._max:
            return Record(data[:KEPT_BYTES], too_large=True)
        return Record(data)

    def _skipped(self) -> Record:
        assert self._skipper is not None
        size = self._skipper.size
        self._walked += self._skipper.walked
        self._skipper = None
        self._index += 1
        return Record(_json.encode({"msgpack_bytes": size}), too_large=True)

    def _check(self, skipper: Skipper) -> None:
        if self._walked + skipper.walked > MAX_SKIPPED_VALUES:
            raise ApiError(
                413,
                RECORD_TOO_LARGE,
                f"the records over {self._max} bytes hold more than {MAX_SKIPPED_VALUES} "
                f"values between them (record {self._index}, counting from 0): "
                "the upload is refused whole",
            )

    def finish(self) -> None:
        if self._skipper is not None or self._held:
            raise self._invalid(f"record {self._index} (counting from 0) is truncated")

    def _too_deep(self) -> ApiError:
        return ApiError(
            400,
            TOO_DEEP,
            f"record {self._index} (counting from 0) nests deeper than {self._max_depth} levels",
        )

    def _invalid(self, message: str) -> ApiError:
        return ApiError(400, "invalid_msgpack", message)


# How each first byte of a msgpack value goes on: (bytes of length or count after it,
# payload bytes per unit of that length, values per unit of that count, fixed payload
# bytes, fixed values). None: not msgpack (0xc1).
_Spec = tuple[int, int, int, int, int]


def _specs() -> list[_Spec | None]:
    specs: list[_Spec | None] = [(0, 0, 0, 0, 0)] * 256  # one byte, holding nothing
    for n in range(1, 16):
        specs[0x80 + n] = (0, 0, 0, 0, 2 * n)  # fixmap
        specs[0x90 + n] = (0, 0, 0, 0, n)  # fixarray
    for n in range(1, 32):
        specs[0xA0 + n] = (0, 0, 0, n, 0)  # fixstr
    specs[0xC1] = None
    for lead, width in ((0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4)):
        specs[lead] = (width, 1, 0, 0, 0)  # bin, str
    for lead, width in ((0xC7, 1), (0xC8, 2), (0xC9, 4)):
        specs[lead] = (width, 1, 0, 1, 0)  # ext: a type byte, then the data
    fixed = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2}
    fixed |= {0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
    for lead, size in fixed.items():
        specs[lead] = (0, 0, 0, size, 0)  # numbers, fixext
    for lead, width, per in ((0xDC, 2, 1), (0xDD, 4, 1), (0xDE, 2, 2), (0xDF, 4, 2)):
        specs[lead] = (width, 0, per, 0, 0)  # array, map
    return specs


_SPECS = _specs()
# Values of one byte that hold nothing: positive and negative fixints, nil, false, true,
# and the empty map, array and string. The fast path of a walk.
_ATOMS = re.compile(rb"[\x00-\x80\x90\xa0\xc0\xc2\xc3\xe0-\xff]*")


class Skipper:
    """Walks past one msgpack value fed in pieces, building nothing."""

    def __init__(self) -> None:
        self.size = 0  # bytes walked
        self.walked = 0  # values walked one by one (not in a run of one-byte ones)
        self._values = 1  # values still to pass
        self._skip = 0  # payload bytes still to pass
        self._header = bytearray()  # a header split between two pieces

    def feed(self, data: memoryview) -> int | None:
        """Where in ``data`` the value ends, or None when it goes on past it."""
        at, end = 0, len(data)
        while True:
            if self._skip:
                take = min(self._skip, end - at)
                self._skip -= take
                at += take
            if not self._values and not self._skip:
                self.size += at
                return at
            if at >= end:
                self.size += at
                return None
            if not self._header:
                run = _ATOMS.match(data, at)
                assert run is not None
                n = min(run.end() - at, self._values)
                if n:
                    self._values -= n
                    at += n
                    continue
            spec = _SPECS[self._header[0] if self._header else data[at]]
            if spec is None:
                raise ApiError(400, "invalid_msgpack", "the body is not msgpack records")
            width, per_length, per_count, payload, values = spec
            take = min(1 + width - len(self._header), end - at)
            self._header += data[at : at + take]
            at += take
            if len(self._header) < 1 + width:
                continue
            n = int.from_bytes(self._header[1:], "big")
            self._header.clear()
            self._skip = n * per_length + payload
            self._values += n * per_count + values - 1
            self.walked += 1
