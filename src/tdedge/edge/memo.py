"""A function memoized for the values clients send again and again.

A worker sees the same few API keys, p13n tokens and quoted query parts all day, and
hashing, parsing or unquoting one costs more than a dict look-up. The arguments are
client input, so the memo is bounded: cleared when full. It lives in the worker's
memory only (a key is never written anywhere from here).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_SIZE = 10_000


class Memo(Generic[K, V]):
    __slots__ = ("_fn", "_known", "max_size")

    def __init__(self, fn: Callable[[K], V], max_size: int = MAX_SIZE) -> None:
        self._fn = fn
        self._known: dict[K, V] = {}
        self.max_size = max_size

    def __call__(self, arg: K) -> V:
        try:
            return self._known[arg]
        except KeyError:
            pass
        if len(self._known) >= self.max_size:
            self._known.clear()
        value = self._known[arg] = self._fn(arg)
        return value

    def __len__(self) -> int:
        return len(self._known)
