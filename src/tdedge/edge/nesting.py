"""How deep JSON text nests, measured without recursion.

msgspec, like every recursive decoder, gives up near Python's recursion limit (about
1,000 levels, raising RecursionError), and where exactly depends on how deep the
caller's stack already is; the loader and the p13n engine decode the same records again
in other stacks. So the doors refuse records nested deeper than
``Settings.max_json_depth`` as bad input, before any of that matters.

Depth counts brackets outside strings: ``{"a":[1]}`` is 2 deep, ``1`` is 0. The count
runs over the bytes with numpy (a few vectorised passes, linear in the size); text with
no more opening brackets than the limit cannot be deeper, which settles nearly every
real body with two ``bytes.count`` calls.

Pure functions: no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tdedge.edge.http import HTTPError

# The reason code of a record refused for its depth.
TOO_DEEP = "too_deep"

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# What each byte does to the depth, outside strings.
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def opening_brackets(text: bytes | memoryview) -> int:
    """Brackets that may open a level (those inside strings included)."""
    data = bytes(text) if isinstance(text, memoryview) else text
    return data.count(b"[") + data.count(b"{")


def deeper_than(text: bytes | memoryview, limit: int) -> bool:
    """Whether JSON ``text`` nests more than ``limit`` levels deep."""
    if opening_brackets(text) <= limit:
        return False
    return bool(depths(text).max(initial=0) > limit)


def too_deep(limit: int) -> HTTPError:
    """The door's answer to a body nested past ``limit``."""
    return HTTPError(400, TOO_DEEP, f"JSON nests deeper than {limit} levels")


def depths(text: bytes | memoryview) -> npt.NDArray[np.int32]:
    """The nesting depth after each byte of ``text``; brackets inside strings do not count."""
    return np.cumsum(_steps(text), dtype=np.int32)


def _steps(text: bytes | memoryview) -> npt.NDArray[np.int8]:
    """+1 at each bracket that opens a level, -1 at each that closes one, else 0.

    Strings are told apart by their quotes: a quote preceded by an odd run of
    backslashes is escaped. Text that is not JSON gets some answer, never an error.
    """
    a = np.frombuffer(text, dtype=np.uint8)
    quote = a == _QUOTE
    step = _STEP[a]
    if quote.any():
        quote[_escaped(a, quote)] = False
        # True from an opening quote up to (not including) its closing quote.
        step[np.logical_xor.accumulate(quote)] = 0
    return step


def _escaped(a: npt.NDArray[np.uint8], quote: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """The positions of quotes that an odd run of backslashes precedes."""
    # Only a quote right after a backslash can be escaped.
    after = np.flatnonzero(quote[1:] & (a[:-1] == _BACKSLASH)) + 1
    if not len(after):
        return after
    backslashes = np.flatnonzero(a == _BACKSLASH)
    # Where the run of each backslash starts, as an index into ``backslashes``.
    new_run = np.empty(len(backslashes), dtype=bool)
    new_run[0] = True
    np.not_equal(backslashes[1:], backslashes[:-1] + 1, out=new_run[1:])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(backslashes)), 0))
    last = np.searchsorted(backslashes, after - 1)  # the backslash just before the quote
    # The run before the quote is odd when the backslash just before it is an even
    # number of places past its run's start.
    escaped: npt.NDArray[np.intp] = after[(last - run_start[last]) % 2 == 0]
    return escaped


def deep_values(text: bytes, level: int, limit: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each value that opens at depth ``level`` and nests past depth
    ``limit`` (counted from the top of ``text``); ``end`` is ``len(text)`` for a value
    never closed. ``text`` need not be JSON."""
    step = _steps(text)
    d = np.cumsum(step, dtype=np.int32)
    starts = np.flatnonzero((step == 1) & (d == level))
    if not len(starts):
        return []
    ends = np.flatnonzero((step == -1) & (d == level - 1))
    where = np.searchsorted(ends, starts)
    # The deepest point of each stretch from one start to the next (past the value's
    # end, the depth is below ``level``, so the stretch's maximum is the value's).
    peaks = np.maximum.reduceat(d, starts)
    spans: list[tuple[int, int]] = []
    for start, i, peak in zip(starts.tolist(), where.tolist(), peaks.tolist(), strict=True):
        if peak > limit:
            end = int(ends[i]) + 1 if i < len(ends) else len(text)
            spans.append((start, end))
    return spans
