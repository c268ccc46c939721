"""What the benches share: processes they start and stop, ``tdedge serve`` on a fresh
data dir, wrk, the references (nginx, a bare granian app), /metrics, the machine's
load, percentiles and rounds.

The benches run as scripts from bench/, so this package imports as ``harness``. This
module holds only what every other module of it needs (no imports of its modules, so
they can import from it).
"""

from __future__ import annotations

import sys
import time


class BenchError(Exception):
    """The bench could not run a part (a tool missing, a process that would not start)."""


def log(msg: str) -> None:
    """A progress line on stderr; stdout is kept for the results."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
