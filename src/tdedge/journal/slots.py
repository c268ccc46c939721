"""One of a folder's numbered slots for this process, held by a file lock.

Each edge worker writes its own journal shard (and, with JetStream, its own outbox) so
that no two processes append to one file; the lock says which slot is taken, and it is
released by the kernel when its process dies, however it dies.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from tdedge.errors import JournalUnavailable

MAX_SLOTS = 64


def claim(folder: Path, what: str) -> tuple[int, IO[bytes]]:
    """Lock the first free ``<what>-NN.lock`` in ``folder``; the lock lives as long as
    the returned file. JournalUnavailable when all ``MAX_SLOTS`` are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(MAX_SLOTS):
        lock = (folder / f"{what}-{i:02d}.lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return i, lock
    raise JournalUnavailable(f"all {MAX_SLOTS} journal {what}s are in use")
