"""Where job results are kept: the data dir's ``results/`` folder (embedded), or the
object store a shared lake keeps its files on (results/objects.py), so that a job
run by one node's runner is fetched through any node. tdedge/backends.py picks one.

A result is named by its job and the attempt that ran it: a runner that lost its job's
lease (cut off from the control database) and finishes it anyway never replaces the
result of the runner that took the job over. Either store publishes a result whole, once
written: a reader finds the finished result or none, never part of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from tdedge.results.format import ResultWriter


class ResultStoreDown(Exception):
    """The store cannot be reached or answered an error (S3 down, credentials refused)."""


class ResultStore(Protocol):
    where: str  # for messages: the folder or the s3:// prefix

    def writer(self, job_id: int, attempt: int) -> ResultWriter:
        """A writer whose ``close`` publishes the result, replacing any earlier one of
        the same attempt."""
        ...

    def size(self, job_id: int, attempt: int) -> int | None:
        """The result's size in bytes; None when there is none (expired, or never
        written)."""
        ...

    def read(self, job_id: int, attempt: int, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (inclusive) of the result; FileNotFoundError when
        it is gone (expired a moment ago)."""
        ...

    def expire(self, written_before: float) -> int:
        """Delete results (and what dead writers left) written before ``written_before``
        (unix seconds); how many went."""
        ...

    def close(self) -> None: ...


class ResultFiles:
    """Results as files of a folder on this machine: ``{job}.msgpack.gz``.

    A data dir has one runner (its role lock), so the attempt needs no place in the
    name: the file of an earlier attempt is that runner's own, replaced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)

    def path(self, job_id: int) -> Path:
        return self.folder / f"{job_id}.msgpack.gz"

    def writer(self, job_id: int, attempt: int) -> ResultWriter:
        # Written beside its place and renamed into it once fsynced: a reader opens
        # the whole file or none.
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(job_id)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        file = tmp.open("wb")

        def publish() -> int:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(tmp, path)
            return path.stat().st_size

        def discard() -> None:
            file.close()
            tmp.unlink(missing_ok=True)

        return ResultWriter(file, publish, discard)

    def size(self, job_id: int, attempt: int) -> int | None:
        try:
            return self.path(job_id).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, job_id: int, attempt: int, start: int, end: int) -> bytes:
        with self.path(job_id).open("rb") as f:
            f.seek(start)
            return f.read(end - start + 1)

    def expire(self, written_before: float) -> int:
        # By the file's own time, so it needs nothing from the job table: a result is
        # written once, when its job ends.
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if ".msgpack" not in entry.name:  # N.msgpack.gz, or N.msgpack.tmpPID
                continue
            try:
                if entry.stat().st_mtime < written_before:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # removed meanwhile
        return removed

    def close(self) -> None:
        pass
