"""The node's drain deadline: written once by the first process told to stop, read by
the others, forgotten at the next start."""

from __future__ import annotations

import time
from pathlib import Path

from tdedge import draining
from tdedge.config import Settings


def test_the_first_stop_sets_the_deadline_and_later_ones_keep_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), drain_grace_s=30.0)
    assert draining.deadline(settings) is None
    before = time.time()
    first = draining.begin(settings)
    assert before + 30.0 <= first <= time.time() + 30.0
    # Another process of the node, signalled later, stops at the same moment.
    later = Settings(data_dir=str(tmp_path / "data"), drain_grace_s=300.0)
    assert draining.begin(later) == first
    assert draining.deadline(later) == first
    assert 0 < draining.remaining(later) <= 30.0


def test_a_past_deadline_leaves_no_grace(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), drain_grace_s=0.0)
    draining.begin(settings)
    time.sleep(0.01)
    assert draining.remaining(settings) == 0.0


def test_clear_forgets_a_drain(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    draining.begin(settings)
    draining.clear(settings)
    assert draining.deadline(settings) is None
    draining.clear(settings)  # nothing to forget: no error


def test_a_garbled_file_is_no_drain(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    draining.path(settings).parent.mkdir(parents=True)
    draining.path(settings).write_text("not a number")
    assert draining.deadline(settings) is None
