"""The loader's heartbeat file, which the edge's /readyz reads.

It is rewritten at least every second, atomically (write a temporary file, then
rename), so a reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    time: float  # unix seconds when it was written
    lag_records: int  # records in the journal not loaded yet
    lag_seconds: float  # age of the oldest of them
    pid: int
    failures: int = 0  # loader steps failed in a row (0 when healthy)


def write_heartbeat(path: Path, beat: Heartbeat) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(beat))
    os.replace(tmp, path)


def read_heartbeat(path: Path) -> Heartbeat | None:
    """The last heartbeat, or None when there is none (or it cannot be read)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Heartbeat)
    except (FileNotFoundError, msgspec.DecodeError):
        # No loader has beaten yet, or the file is not tdedge's: not ready either way.
        return None
