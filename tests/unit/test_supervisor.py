"""How long the supervisor waits before restarting a child that died."""

from __future__ import annotations

import subprocess
import sys

from tdedge.server import RESTART_MAX_S, RESTART_MIN_S, restart_delay


def test_a_child_that_keeps_dying_at_start_is_restarted_ever_more_slowly() -> None:
    waits = []
    previous = None
    for _ in range(9):
        previous = restart_delay(previous, uptime_s=1.5)
        waits.append(previous)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert (RESTART_MIN_S, RESTART_MAX_S) == (0.5, 30.0)


def test_a_child_that_ran_a_while_is_restarted_at_once() -> None:
    assert restart_delay(None, uptime_s=0.1) == RESTART_MIN_S  # its first death
    assert restart_delay(16.0, uptime_s=3600.0) == RESTART_MIN_S  # it had recovered


def test_serve_imports_no_metrics_before_it_chooses_their_storage() -> None:
    # prometheus-client picks in-process or multiprocess storage when first imported;
    # imported before `serve` sets PROMETHEUS_MULTIPROC_DIR, the edge workers it forks
    # would count in memory, and /metrics would show none of their requests.
    code = "import sys, tdedge.cli, tdedge.server; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
