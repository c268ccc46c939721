"""The Loader: journal → lake, one batch at a time, exactly once.

Each step reads about ``loader_batch_max_records`` envelopes after the positions stored
in the lake, routes them (loader/routing.py), shapes each table's rows
(loader/records.py) and commits rows, import errors, the bulk-import ids they carried
(loader/imports.py: an upload whose unique_id is loaded already is dropped here) and
the new positions in one lake transaction. Only then does it tell the journal it may
discard those entries. A crash anywhere before the commit re-reads the same entries from
the old positions; a crash after it finds the new positions in the lake.

A batch is committed once it is full, or once its oldest record has waited
``loader_batch_max_wait_s`` (longer when records arrive fast: loader/pacing.py);
otherwise the loader polls again after ``loader_poll_s`` for more records to share the
commit (each commit costs ~25 ms of CPU here, whatever its size).

A failed step is retried with backoff; nothing is lost because the positions did not
move. When commits keep failing, the tables the lake refuses are set aside as import
errors (reason ``load_failed``) so the rest keeps flowing.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tdedge import metrics
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.imports import ImportLedger
from tdedge.errors import LakeError
from tdedge.journal.base import JournalReader
from tdedge.journal.envelope import JournalGroup
from tdedge.lake.batch import Batch, TableRows
from tdedge.lake.lake import Lake
from tdedge.loader import imports
from tdedge.loader.heartbeat import Heartbeat, write_heartbeat
from tdedge.loader.pacing import Pacing
from tdedge.loader.records import to_columns
from tdedge.loader.routing import LOAD_FAILED, Reject, Routed, Router

log = logging.getLogger("tdedge.loader")

HEARTBEAT_EVERY_S = 0.5
MAX_BACKOFF_S = 5.0
# Commits failed in a row (about 10 s of retries at the default poll interval) before
# the tables of the batch are tried one by one and refused ones set aside.
SET_ASIDE_AFTER_FAILURES = 8


@dataclass(frozen=True, slots=True)
class StepReport:
    entries: int = 0  # envelopes consumed (loaded, rejected or dropped as duplicates)
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0  # envelopes of bulk imports loaded already (loader/imports.py)
    conflicts: int = 0
    lag_records: int = 0  # left in the journal after this step
    lag_seconds: float = 0.0  # age of the oldest waiting record when the step began

    @property
    def more(self) -> bool:
        """A batch was loaded and records are still waiting: step again without a pause."""
        return self.entries > 0 and self.lag_records > 0


class Loader:
    def __init__(
        self,
        settings: Settings,
        reader: JournalReader,
        directory: Directory,
        lake: Lake,
        clock: Callable[[], float] = time.time,
        ledger: ImportLedger | None = None,
    ) -> None:
        self._settings = settings
        self._reader = reader
        self._lake = lake
        # The edge's bulk-import ids: recorded once loaded, forgotten as the lake's are.
        self._ledger = ledger
        self._router = Router(settings, directory)
        self._pacing = Pacing.of(settings)
        self._clock = clock
        self._positions: dict[str, int] | None = None
        self._last = StepReport()
        self._failed_commits = 0

    def step(self, now: float) -> StepReport:
        """Load one batch if one is due; see the module docstring."""
        try:
            with _collector_paused():
                return self._step(now)
        except BaseException:
            # The commit may or may not have happened: ask the lake next time.
            self._positions = None
            raise

    def _step(self, now: float) -> StepReport:
        positions = self._current_positions()
        waiting, oldest_ms = self._reader.pending(positions)
        lag_s = 0.0 if oldest_ms is None else max(0.0, now - oldest_ms / 1000)
        if not self._pacing.due(waiting, lag_s):
            return self._report(StepReport(lag_records=waiting, lag_seconds=lag_s))
        groups = self._reader.read(
            positions, self._pacing.max_records, self._settings.loader_batch_max_bytes
        )
        if not groups:
            return self._report(StepReport(lag_records=waiting, lag_seconds=lag_s))
        sifted = self._sift(groups, now)
        routed = self._router.route(sifted.groups, now)
        entries = len(routed.envelopes.items) + sifted.dropped
        tables, conflicts = self._shape(routed)
        # Past every group read, dropped envelopes included.
        moved = _last_seqs(groups)
        batch = Batch(tables, [*routed.rejections, *sifted.rejections], moved, sifted.imports)
        if self._failed_commits >= SET_ASIDE_AFTER_FAILURES:
            batch = self._set_aside(batch, routed, now)
        try:
            self._lake.commit(batch)
        except LakeError:
            self._failed_commits += 1
            raise
        self._failed_commits = 0
        self._positions = {**positions, **moved}
        if self._ledger is not None and batch.imports:
            imports.remember(self._ledger, batch.imports, now)
        self._reader.release(self._positions)
        report = StepReport(
            entries=entries,
            rows=batch.row_count,
            rejected=len(batch.rejections),
            duplicates=sifted.dropped,
            conflicts=conflicts,
            lag_records=max(0, waiting - entries),
            lag_seconds=lag_s,
        )
        _count(report, batch)
        return self._report(report)

    def _set_aside(self, batch: Batch, routed: Routed, now: float) -> Batch:
        """Move the rows of tables the lake keeps refusing to import errors.

        Without this, one table whose rows the lake cannot take (a DuckLake limit tdedge
        does not know about) would stop every table, and the journal would fill up.
        If the lake itself is unwell, the commit of what is left fails too and nothing
        is set aside.
        """
        refused: dict[tuple[str, str], str] = {}
        for rows in batch.tables:
            error = self._lake.probe(rows)
            if error is not None and "database is locked" not in error:
                refused[(rows.database, rows.table)] = error
        if not refused:
            return batch
        rejections = list(batch.rejections)
        for (database, table), error in refused.items():
            log.error("setting aside rows for %s.%s the lake refuses: %s", database, table, error)
            verdict = Reject(LOAD_FAILED, f"the lake refused the rows: {error}", None)
            rejections.extend(routed.rejected(routed.tables[(database, table)].rows, verdict, now))
        kept = [t for t in batch.tables if (t.database, t.table) not in refused]
        return Batch(kept, rejections, batch.positions, batch.imports)

    def _sift(self, groups: Sequence[JournalGroup], now: float) -> imports.Sifted:
        """The batch without bulk imports loaded already (loader/imports.py)."""
        return imports.sift_batch(groups, self._router, self._lake, now)

    def _current_positions(self) -> dict[str, int]:
        if self._positions is None:
            self._positions = self._lake.positions()
        return self._positions

    def _shape(self, routed: Routed) -> tuple[list[TableRows], int]:
        tables: list[TableRows] = []
        conflicts = 0
        for (database, table), found in routed.tables.items():
            existing = self._lake.columns(database, table)
            shaped = to_columns(found.records, found.received_s, existing)
            tables.append(TableRows(database, table, shaped.table))
            conflicts += shaped.conflicts
        return tables, conflicts

    def _report(self, report: StepReport) -> StepReport:
        metrics.LOADER_LAG_RECORDS.set(report.lag_records)
        metrics.LOADER_LAG_SECONDS.set(report.lag_seconds)
        self._last = report
        return report

    def run(self, stop: threading.Event) -> None:
        """Load until ``stop`` is set; compacts the lake and writes the heartbeat."""
        interval = self._settings.compaction_interval_s
        next_compaction = self._clock() + interval
        last_beat = float("-inf")
        failures = 0
        log.info("loader started")
        while not stop.is_set():
            now = self._clock()
            report = self._attempt(now)
            failures = 0 if report is not None else failures + 1
            if self._clock() - last_beat >= HEARTBEAT_EVERY_S:
                last_beat = self._clock()
                self._beat(last_beat, failures)
            if now >= next_compaction:
                self.compact(now)
                next_compaction = self._clock() + interval
                # Compaction can take seconds: beat again right after it.
                last_beat = float("-inf")
            if failures:
                stop.wait(min(MAX_BACKOFF_S, self._settings.loader_poll_s * 2**failures))
            elif report is not None and not report.more:
                stop.wait(self._settings.loader_poll_s)
        log.info("loader stopped")

    def _attempt(self, now: float) -> StepReport | None:
        try:
            report = self.step(now)
        except Exception:
            # Nothing is lost: the positions were not committed, the batch is re-read.
            log.exception("loader step failed; retrying")
            return None
        if report.entries:
            log.debug("loaded %d rows, rejected %d", report.rows, report.rejected)
        return report

    def compact(self, now: float) -> None:
        """Compact the lake, and forget the bulk-import ids past their retention in the
        edge's ledger too (either forgetting first is safe: a retry the ledger no longer
        knows is journaled and dropped by the loader; one the lake no longer knows is
        answered by the ledger). Failures are logged and tried again next time."""
        started = self._clock()
        try:
            self._lake.compact(now)
        except Exception:
            log.exception("lake compaction failed; will try again")
            return
        log.info("compaction took %.2f s", self._clock() - started)
        if self._ledger is None:
            return
        try:
            forgotten = self._ledger.forget(now - self._settings.bulk_import_retention_s)
        except Exception:
            log.exception("forgetting old bulk-import ids failed; will try again")
            return
        if forgotten:
            log.info("forgot %d bulk-import ids past their retention", forgotten)

    def _beat(self, now: float, failures: int) -> None:
        beat = Heartbeat(
            time=now,
            lag_records=self._last.lag_records,
            lag_seconds=self._last.lag_seconds,
            pid=os.getpid(),
            failures=failures,
        )
        try:
            write_heartbeat(self._settings.loader_heartbeat, beat)
        except OSError:
            log.exception("cannot write the loader heartbeat %s", self._settings.loader_heartbeat)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a step.

    A step allocates a few hundred thousand objects (entries, decoded records, column
    lists), which would trigger many collections scanning them all, for no gain:
    they hold no cycles and reference counting frees them. Pausing it took loading
    from the SQLite journal from ~100k to ~150-200k rows/s here.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _last_seqs(groups: Sequence[JournalGroup]) -> dict[str, int]:
    # read() returns each shard oldest first, so the last group of a shard is its newest.
    return {group.shard: group.seq for group in groups}


def _count(report: StepReport, batch: Batch) -> None:
    metrics.LOADER_BATCHES.inc()
    metrics.ROWS_WRITTEN.inc(report.rows)
    if report.conflicts:
        metrics.TYPE_CONFLICTS.inc(report.conflicts)
    if report.duplicates:
        metrics.IMPORT_DUPLICATES.inc(report.duplicates)
    for reason, n in Counter(r.reason for r in batch.rejections).items():
        metrics.REJECTIONS.labels(reason=reason).inc(n)
