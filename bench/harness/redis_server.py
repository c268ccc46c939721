"""A throw-away Redis server for a bench run, on loopback: append-only, fsynced as asked
(``everysec``, as the docs recommend, or ``always``). Started as the tests start theirs
(tests/redis_server.py), so the benches measure the server the tests check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The repository's root, for its tests package (the benches run from bench/).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import redis_server  # noqa: E402


def start_redis(root: Path, fsync: str = "everysec") -> tuple[subprocess.Popen[bytes], int]:
    """The server's process and port; its files go in ``root`` (made here)."""
    root.mkdir()
    return redis_server.start(root, fsync)
