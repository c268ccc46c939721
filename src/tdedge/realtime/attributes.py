"""Real-time attributes: how an event changes a profile, and what a profile's value is.

``single`` keeps the latest value of a column (optionally expiring), ``list`` the recent
items of a column (bounded, optionally windowed), ``counter`` a total or a sliding-window
sum, ``imported`` a value loaded from batch data (read-only here). Every function takes
``now_ms``: nothing reads the clock, so window expiry is tested with any time.

Sliding windows are kept as buckets (Treasure Data's "sub-durations"): an increment at
time t is counted until ``now`` passes ``t + window``, rounded up to the end of its
bucket — so it stays counted for at most one bucket longer than the window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from tdedge.realtime.criteria import Context, Node
from tdedge.realtime.profile import Counter, Item, Profile, Single

# Treasure Data: ≤ 500 bytes per attribute value. Longer texts are cut.
MAX_VALUE_CHARS = 500
# Buckets per sliding window unless the configuration names a bucket size.
DEFAULT_BUCKETS_PER_WINDOW = 60

Scalar = str | int | float | bool
Update = Callable[[Profile, Mapping[str, Any], int], None]
Read = Callable[[Profile, Mapping[str, Any], int], Any]
_json = msgspec.json.Encoder()


def scalar(value: Any) -> Scalar | None:
    """A value an attribute can keep: scalars as they are (texts cut), others as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, bool | int | float):
        return value
    return _json.encode(value).decode()[:MAX_VALUE_CHARS]


class Attribute:
    """What every kind shares: a name, which events touch it, whether it is sensitive."""

    kind = ""
    # Sub-attributes a criteria or payload can name as ``name.sub``.
    subs: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        *,
        tables: frozenset[str] | None = None,
        filter: Node | None = None,
        sensitive: bool = False,
    ) -> None:
        self.name = name
        self.tables = tables
        self.filter = filter
        self.sensitive = sensitive

    def applies(self, table: str, event: Context) -> bool:
        """Whether an event (in an event-only Context) updates this attribute."""
        if self.tables is not None and table not in self.tables:
            return False
        return self.filter is None or self.filter.test(event)

    def update(self, profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
        """Apply one event (already known to apply)."""

    def updater(self) -> Update:
        """``update`` as the request path calls it (kinds may specialise it)."""
        return self.update

    def tidy(self, profile: Profile, now_ms: int) -> None:
        """Drop what has expired or overflows (after updates and merges)."""

    def value(self, profile: Profile, imported: Mapping[str, Any], now_ms: int) -> Any:
        raise NotImplementedError

    def reader(self) -> Read:
        """``value`` as the request path calls it (kinds may specialise it)."""
        return self.value

    def sub(self, profile: Profile, sub: str, imported: Mapping[str, Any], now_ms: int) -> Any:
        raise KeyError(sub)


class SingleAttribute(Attribute):
    kind = "single"
    subs = ("time",)

    def __init__(self, name: str, column: str, expire_ms: int | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.column = column
        self.expire_ms = expire_ms

    def update(self, profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
        value = scalar(event.get(self.column))
        if value is not None:
            profile.singles[self.name] = Single(value, now_ms)

    def updater(self) -> Update:
        name, column = self.name, self.column

        def update(profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
            raw: Any = event.get(column)
            t = type(raw)
            # The common types inline; scalar() has the same rules for every type.
            if t is str:
                value: Scalar | None = raw[:MAX_VALUE_CHARS]
            elif t is int or t is float or t is bool:
                value = raw
            else:
                value = scalar(raw)
                if value is None:
                    return
            profile.singles[name] = Single(value, now_ms)

        return update

    def _current(self, profile: Profile, now_ms: int) -> Single | None:
        found = profile.singles.get(self.name)
        if found is None or (self.expire_ms is not None and now_ms - found.at_ms >= self.expire_ms):
            return None
        return found

    def tidy(self, profile: Profile, now_ms: int) -> None:
        if self.name in profile.singles and self._current(profile, now_ms) is None:
            del profile.singles[self.name]

    def value(self, profile: Profile, imported: Mapping[str, Any], now_ms: int) -> Any:
        found = self._current(profile, now_ms)
        return None if found is None else found.value

    def sub(self, profile: Profile, sub: str, imported: Mapping[str, Any], now_ms: int) -> Any:
        found = self._current(profile, now_ms)
        return None if found is None else found.at_ms


class ListAttribute(Attribute):
    kind = "list"
    subs = ("first", "last", "count", "sum", "min", "max", "distinct_list", "time")

    def __init__(
        self,
        name: str,
        column: str,
        max_items: int = 10,
        window_ms: int | None = None,
        distinct: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        self.column = column
        self.max_items = max_items
        self.window_ms = window_ms
        self.distinct = distinct

    def update(self, profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
        raw = event.get(self.column)
        values = raw if isinstance(raw, list) else [raw]
        items = profile.lists.get(self.name)
        if items is None:
            items = profile.lists[self.name] = []
        for v in values:
            value = scalar(v)
            if value is None:
                continue
            if self.distinct:
                kind = type(value)
                for at, item in enumerate(items):
                    if item.value == value and type(item.value) is kind:
                        del items[at]
                        break
            items.insert(0, Item(value, now_ms))
        # Items stay distinct one insert at a time; only the bounds need applying.
        self._bound(profile, items, now_ms)

    def updater(self) -> Update:
        """``update``, with the one-value event (not a list) taking a short path."""
        name, column, distinct, bound, general = (
            self.name,
            self.column,
            self.distinct,
            self._bound,
            self.update,
        )

        def update(profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
            raw: Any = event.get(column)
            t = type(raw)
            if t is not str and t is not int and t is not float and t is not bool:
                general(profile, event, now_ms)  # lists, objects, missing values
                return
            value = raw[:MAX_VALUE_CHARS] if t is str else raw
            items = profile.lists.get(name)
            if items is None:
                items = profile.lists[name] = []
            elif distinct:
                for at, item in enumerate(items):
                    if item.value == value and type(item.value) is t:
                        del items[at]
                        break
            items.insert(0, Item(value, now_ms))
            bound(profile, items, now_ms)

        return update

    def _bound(self, profile: Profile, items: list[Item], now_ms: int) -> None:
        if self.window_ms is not None and items and items[-1].at_ms <= now_ms - self.window_ms:
            cutoff = now_ms - self.window_ms
            items = [i for i in items if i.at_ms > cutoff]
        if len(items) > self.max_items:
            items = items[: self.max_items]
        if items:
            profile.lists[self.name] = items
        else:
            profile.lists.pop(self.name, None)

    def tidy(self, profile: Profile, now_ms: int) -> None:
        items = profile.lists.get(self.name)
        if items is None:
            return
        if self.distinct:
            kept: list[Item] = []
            for item in items:  # newest first: the newest of equal items stays
                if not any(_same(k.value, item.value) for k in kept):
                    kept.append(item)
            items = kept
        if self.window_ms is not None:
            cutoff = now_ms - self.window_ms
            items = [i for i in items if i.at_ms > cutoff]
        if items:
            profile.lists[self.name] = items[: self.max_items]
        else:
            del profile.lists[self.name]

    def _items(self, profile: Profile, now_ms: int) -> list[Item]:
        items = profile.lists.get(self.name, [])
        if self.window_ms is not None:
            cutoff = now_ms - self.window_ms
            items = [i for i in items if i.at_ms > cutoff]
        return items

    def value(self, profile: Profile, imported: Mapping[str, Any], now_ms: int) -> Any:
        return [i.value for i in self._items(profile, now_ms)]

    def sub(self, profile: Profile, sub: str, imported: Mapping[str, Any], now_ms: int) -> Any:
        items = self._items(profile, now_ms)
        values = [i.value for i in items]
        numbers = [
            float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if sub == "count":
            return len(values)
        if sub == "distinct_list":
            out: list[Any] = []
            for v in values:
                if not any(_same(v, o) for o in out):
                    out.append(v)
            return out
        if not values:
            return None
        if sub == "first":
            return values[-1]
        if sub == "last":
            return values[0]
        if sub == "time":
            return items[0].at_ms
        if not numbers:
            return None
        if sub == "sum":
            total = float(sum(numbers))
            return int(total) if total.is_integer() else total
        return min(numbers) if sub == "min" else max(numbers)


class CounterAttribute(Attribute):
    kind = "counter"

    def __init__(
        self,
        name: str,
        window_ms: int | None = None,
        bucket_ms: int | None = None,
        increment: float = 1.0,
        increment_column: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        self.window_ms = window_ms
        if window_ms is not None and bucket_ms is None:
            bucket_ms = max(1000, window_ms // DEFAULT_BUCKETS_PER_WINDOW)
        self.bucket_ms = bucket_ms
        self.increment = increment
        self.increment_column = increment_column
        self._update = self._build()

    def _amount(self, event: Mapping[str, Any]) -> float | None:
        if self.increment_column is None:
            return self.increment
        return _amount(event.get(self.increment_column))

    def update(self, profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
        self._update(profile, event, now_ms)

    def updater(self) -> Update:
        return self._update

    def _build(self) -> Update:
        """The update as one closure: counters are most of a profile's attributes, and
        this runs for each of them on every event."""
        name, window, bucket, column = (
            self.name,
            self.window_ms,
            self.bucket_ms,
            self.increment_column,
        )
        increment = self.increment
        tidy = self.tidy

        def update(profile: Profile, event: Mapping[str, Any], now_ms: int) -> None:
            amount = increment if column is None else _amount(event.get(column))
            if amount is None:
                return
            counter = profile.counters.get(name)
            if counter is None:
                counter = profile.counters[name] = Counter()
            counter.at_ms = now_ms
            if window is None or bucket is None:
                counter.total += amount
                return
            start = now_ms - now_ms % bucket
            buckets = counter.buckets
            if start in buckets:
                buckets[start] += amount
            else:
                buckets[start] = amount
                tidy(profile, now_ms)  # a new bucket: old ones may have left the window

        return update

    def tidy(self, profile: Profile, now_ms: int) -> None:
        counter = profile.counters.get(self.name)
        if counter is None or self.window_ms is None or self.bucket_ms is None:
            return
        oldest = now_ms - self.window_ms - self.bucket_ms  # a bucket ending before this is out
        buckets = counter.buckets
        if not buckets or min(buckets) > oldest:
            return
        for s in [s for s in buckets if s <= oldest]:
            del buckets[s]

    def value(self, profile: Profile, imported: Mapping[str, Any], now_ms: int) -> Any:
        counter = profile.counters.get(self.name)
        if counter is None:
            return 0
        if self.window_ms is None or self.bucket_ms is None:
            total = counter.total
        else:
            oldest = now_ms - self.window_ms - self.bucket_ms
            total = float(sum(a for s, a in counter.buckets.items() if s > oldest))
        return int(total) if total.is_integer() else total

    def reader(self) -> Read:
        name, window, bucket = self.name, self.window_ms, self.bucket_ms
        if window is None or bucket is None:
            return self.value
        span = window + bucket

        def read(profile: Profile, imported: Mapping[str, Any], now_ms: int) -> Any:
            counter = profile.counters.get(name)
            if counter is None:
                return 0
            oldest = now_ms - span
            total = 0.0
            for start, amount in counter.buckets.items():
                if start > oldest:
                    total += amount
            return int(total) if total.is_integer() else total

        return read


class ImportedAttribute(Attribute):
    kind = "imported"

    def applies(self, table: str, event: Context) -> bool:
        return False

    def value(self, profile: Profile, imported: Mapping[str, Any], now_ms: int) -> Any:
        return imported.get(self.name)


def _amount(raw: Any) -> float | None:
    """A counter increment from an event value: numbers, and texts that hold one."""
    t = type(raw)
    if t is int or t is float:
        value = float(raw)
    elif t is str:
        try:
            value = float(raw)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)
