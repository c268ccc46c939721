"""realtime/collector.py: survivors of young collections are frozen, cycles still die."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tdedge.realtime.collector import freeze_survivors


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def freezing() -> Iterator[None]:
    gc.collect()
    stop = freeze_survivors()
    try:
        yield
    finally:
        stop()
        gc.unfreeze()  # give this test process its collector back as it was


def test_what_survives_a_young_collection_is_frozen_and_not_walked_again(
    freezing: None,
) -> None:
    kept = [[i] for i in range(1000)]  # lists: tracked, like a cache's profiles
    before = gc.get_freeze_count()
    gc.collect(1)
    assert gc.get_freeze_count() >= before + len(kept)
    old = {id(x) for x in gc.get_objects(2)}
    assert not any(id(x) in old for x in kept)  # not promoted: frozen


def test_a_cycle_that_dies_young_is_still_collected(freezing: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect(0)
    assert gone() is None


def test_frozen_objects_are_still_freed_by_reference_counting(freezing: None) -> None:
    node = Node()
    gone = weakref.ref(node)
    gc.collect(1)
    assert gc.get_freeze_count() > 0
    del node
    assert gone() is None


def test_stopping_leaves_young_collections_alone() -> None:
    stop = freeze_survivors()
    stop()
    stop()  # twice is harmless
    gc.collect()
    before = gc.get_freeze_count()
    kept = [[i] for i in range(100)]
    gc.collect(1)
    assert gc.get_freeze_count() == before
    assert kept
