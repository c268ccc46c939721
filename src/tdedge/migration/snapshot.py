"""A private copy of a data dir's SQLite files, taken without writing to the data dir.

A SQLite reader, even one opened read-only, creates the ``-wal`` and ``-shm`` files of a
database in WAL mode beside it and leaves them there. So each file is copied as bytes,
with its ``-wal`` when there is one (committed transactions not yet checkpointed), and
SQLite opens the copy, which replays that WAL into it. With no writer running (no
``serve``; run.py checks) the bytes are one consistent state; a file that changes while
it is copied (a CLI command writing meanwhile) is refused rather than copied torn.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tdedge.config import Settings
from tdedge.errors import TdedgeError

# SQLite's WAL file beside a database.
WAL_SUFFIX = "-wal"


class MigrationError(TdedgeError):
    """The move could not be made; what was refused, and why, is in the message."""


def _state(path: Path) -> tuple[tuple[int, int] | None, ...]:
    found: list[tuple[int, int] | None] = []
    for item in (path, path.with_name(path.name + WAL_SUFFIX)):
        try:
            st = item.stat()
        except FileNotFoundError:
            found.append(None)
            continue
        found.append((st.st_size, st.st_mtime_ns))
    return tuple(found)


def copy_sqlite(src: Path, dst: Path) -> bool:
    """Copy the SQLite file ``src`` (and its WAL) to ``dst``; False when ``src`` is not
    there."""
    if not src.is_file():
        return False
    before = _state(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    wal = src.with_name(src.name + WAL_SUFFIX)
    if wal.is_file():
        shutil.copyfile(wal, dst.with_name(dst.name + WAL_SUFFIX))
    if _state(src) != before:
        raise MigrationError(
            f"{src} changed while it was copied: stop every tdedge command writing to the "
            "data dir, then run migrate again"
        )
    return True


def stage(source: Settings, staging: Path) -> Settings:
    """Copy every SQLite file of ``source``'s data dir that the move reads into
    ``staging``, at the same places; the settings of that copy."""
    staged = Settings(data_dir=str(staging))
    pairs = [
        (source.control_db, staged.control_db),
        (source.bulk_sessions_db, staged.bulk_sessions_db),
        (source.lake_catalog_file, staged.lake_catalog_file),
    ]
    pairs += [
        (path, staged.journal_dir / path.name)
        for path in sorted(source.journal_dir.glob("shard-*.sqlite"))
    ]
    for src, dst in pairs:
        copy_sqlite(src, dst)
    return staged
