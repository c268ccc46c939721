"""The Loader: journal → lake, one batch at a time, exactly once.

Each step reads about ``loader_batch_max_records`` envelopes after the positions stored
in the lake, routes them (loader/routing.py), drops SDK events resent with a
record_uuid loaded already (loader/duplicates.py), shapes each table's rows
(loader/records.py) and commits rows, import errors, the bulk-import ids they carried
(loader/imports.py: an upload whose unique_id is loaded already is dropped here) and
the new positions in one lake transaction. Only then does it tell the journal it may
discard those entries. A crash anywhere before the commit re-reads the same entries from
the old positions; a crash after it finds the new positions in the lake.

A batch is committed once it is full, or once its oldest record has waited
``loader_batch_max_wait_s`` (longer when records arrive fast: loader/pacing.py);
otherwise the loader polls again after ``loader_poll_s`` for more records to share the
commit (each commit costs ~25 ms of CPU here, whatever its size).

A burst of new tables does not hold back the records behind it: a step creates at most
``loader_new_tables_per_commit`` of them and commits the rows of every existing table it
read, with load marks, leaving the positions where they are for the tables still to
create (``_hold_new_tables``).

A failed step is retried with backoff; nothing is lost because the positions did not
move. One table cannot stop the others:

- a record that would take its table past ``max_table_columns`` is refused
  (``too_many_columns``, loader/limits.py) before anything is written;
- a table whose rows cannot be shaped is set aside at once (``load_failed``);
- when a batch's commit fails again and again, its tables are committed apart, halves
  of them at a time down to single tables (``_isolate``), each commit a real one with
  load marks saying which table's rows it holds (lake/batch.py LoadMark); a table that
  fails alone, twice, is set aside (``load_failed``, with the lake's error), and the
  last commit writes the import errors and moves the positions. Exactly once still
  holds: a loader that starts again before that last commit finds the marks and skips
  the rows they cover. If the lake itself is unwell, that last commit fails too and
  nothing is set aside.

Each commit names the positions its batch was read from, and the lake refuses it if
they are not the stored ones any more (lake/fence.py): with a replicated journal, a
loader that stalled past its partition's lease while another took the partition over
and loaded it must not load the same records again. Such a batch is dropped whole, not
retried: the loader forgets the positions it had, reads them from the lake again, and
reads on from there in the partitions it still holds (``_taken_over``).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, groupby
from operator import attrgetter

from tdedge import metrics
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.control.imports import ImportLedger
from tdedge.control.retention import RetentionRules
from tdedge.errors import LakeError, PartitionTakenOver
from tdedge.journal.base import JournalReader
from tdedge.journal.envelope import Envelope, JournalGroup
from tdedge.lake.batch import Batch, LoadMark, Rejection, TableRows
from tdedge.lake.compaction import Slice
from tdedge.lake.lake import Lake
from tdedge.lake.tables import Columns
from tdedge.loader import duplicates, imports
from tdedge.loader.heartbeat import Heartbeat, write_heartbeat
from tdedge.loader.limits import TOO_MANY_COLUMNS, too_wide
from tdedge.loader.pacing import Pacing
from tdedge.loader.record_ids import RecordIds
from tdedge.loader.records import to_columns
from tdedge.loader.routing import LOAD_FAILED, TABLE_LIMIT, Reject, Routed, Router, TableInput
from tdedge.names import RECORD_ID

log = logging.getLogger("tdedge.loader")

HEARTBEAT_EVERY_S = 0.5
MAX_BACKOFF_S = 5.0
# Commits of one batch failed in a row (retried with backoff, ~0.3 s at the default poll
# interval) before its tables are committed apart to find the ones the lake refuses.
# A catalog locked by another process is retried inside each commit (Lake.commit).
SET_ASIDE_AFTER_FAILURES = 2
# How long one step may spend committing tables apart; the next step goes on where it
# stopped (the load marks skip what was committed), so the heartbeat keeps beating.
ISOLATION_BUDGET_S = 5.0
# An import error keeps this much of the lake's error, which may quote a whole statement.
MAX_DETAIL_CHARS = 2_000

TableKey = tuple[str, str]  # (database, table)


@dataclass(frozen=True, slots=True)
class Shaped:
    """One table's part of a batch: its rows, the records they came from, and the
    import errors of the table's records refused while shaping."""

    rows: TableRows
    found: TableInput
    rejections: list[Rejection]
    new: bool = False  # the table does not exist yet: this commit creates it
    conflicts: int = 0  # values moved to td_type_conflicts

    @property
    def key(self) -> TableKey:
        return (self.rows.database, self.rows.table)


@dataclass(frozen=True, slots=True)
class StepReport:
    entries: int = 0  # envelopes consumed (loaded, rejected or dropped as duplicates)
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0  # envelopes of bulk imports loaded already (loader/imports.py)
    record_duplicates: int = 0  # resent SDK events (loader/duplicates.py)
    conflicts: int = 0
    lag_records: int = 0  # left in the journal after this step
    # Age of the oldest waiting record when the step began, but for records that wait
    # for their new table to be created (``held_seconds``).
    lag_seconds: float = 0.0
    held_tables: int = 0  # new tables whose records wait (Loader._hold_new_tables)
    held_seconds: float = 0.0  # age of the oldest record that waits for its new table

    @property
    def more(self) -> bool:
        """A batch was loaded and records are still waiting: step again without a pause."""
        return (self.entries > 0 or self.rows > 0) and self.lag_records > 0


class Loader:
    def __init__(
        self,
        settings: Settings,
        reader: JournalReader,
        directory: Directory,
        lake: Lake,
        clock: Callable[[], float] = time.time,
        ledger: ImportLedger | None = None,
        record_ids: RecordIds | None = None,
        retention: RetentionRules | None = None,
    ) -> None:
        self._settings = settings
        # The tables' retentions (control/retention.py): applied by compaction.
        self._retention = retention
        self._reader = reader
        self._lake = lake
        # The edge's bulk-import ids: recorded once loaded, forgotten as the lake's are.
        self._ledger = ledger
        # The record_uuids loaded (loader/duplicates.py); None: resent events load again.
        self._record_ids = record_ids
        self._directory = directory
        self._router = Router(settings, directory)
        self._pacing = Pacing.of(settings)
        self._clock = clock
        self._positions: dict[str, int] | None = None
        self._last = StepReport()
        self._failed_commits = 0
        # Tables committed apart while a batch kept failing, and the last journal seq of
        # each shard their rows cover (lake/batch.py LoadMark).
        self._marks: dict[TableKey, dict[str, int]] = {}
        # Tables of the failing batch that failed once when committed alone: the lake's
        # error. A second failure sets them aside.
        self._suspects: dict[TableKey, str] = {}
        self._upgraded = False

    def step(self, now: float) -> StepReport:
        """Load one batch if one is due; see the module docstring."""
        try:
            with _collector_paused():
                return self._step(now)
        except PartitionTakenOver as e:
            return self._taken_over(e)
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
        full = sum(len(g.envelopes) for g in groups) >= self._pacing.max_records
        holding = self._failed_commits < SET_ASIDE_AFTER_FAILURES
        groups = within_tables(
            groups,
            self._settings.loader_batch_max_tables,
            lambda key: not self._lake.has_table(*key),
            self._settings.loader_new_tables_per_commit if holding else None,
            self._marks,
        )
        sifted = self._sift(groups, now)
        routed = self._router.route(sifted.groups, now)
        entries = len(routed.envelopes.items) + sifted.dropped
        if self._marks:
            self._skip_marked(routed)
        resent = self._sift_resent(routed, now)
        shaped, refused = self._shape(routed, now)
        held: list[Shaped] = []
        if holding:
            shaped, held = self._hold_new_tables(shaped, full, now)
        if self._record_ids is not None and resent.claims:
            # Durable before the commit (loader/record_ids.py says why).
            self._record_ids.claim(resent.claims_of(t.key for t in shaped), now)
        # Past every group read, dropped envelopes included.
        moved = _last_seqs(groups)
        if held:
            return self._commit_holding(shaped, held, moved, waiting, now)
        conflicts = sum(t.conflicts for t in shaped)
        apart: list[Shaped] = []  # committed on their own already
        if self._failed_commits >= SET_ASIDE_AFTER_FAILURES and shaped:
            isolated = self._isolate(shaped, routed, moved, now)
            if isolated is None:
                return self._report(StepReport(lag_records=waiting, lag_seconds=lag_s))
            apart, set_aside = isolated
            refused.extend(set_aside)
            shaped = []
        batch = Batch(
            [t.rows for t in shaped],
            [
                *routed.rejections,
                *sifted.rejections,
                *resent.rejections,
                *refused,
                *chain.from_iterable(t.rejections for t in shaped),
            ],
            moved,
            sifted.imports,
            read_from=Batch.reading(positions, moved),
        )
        try:
            self._lake.commit(batch)
        except LakeError:
            self._failed_commits += 1
            raise
        self._failed_commits = 0
        self._suspects.clear()
        self._positions = {**positions, **moved}
        self._forget_marks()
        if self._ledger is not None and batch.imports:
            imports.remember(self._ledger, batch.imports, now)
        self._reader.release(self._positions)
        rejections = [*batch.rejections, *chain.from_iterable(t.rejections for t in apart)]
        report = StepReport(
            entries=entries,
            rows=batch.row_count + sum(t.rows.rows.num_rows for t in apart),
            rejected=len(rejections),
            duplicates=sifted.dropped,
            record_duplicates=resent.dropped,
            conflicts=conflicts,
            lag_records=max(0, waiting - entries),
            lag_seconds=lag_s,
        )
        _count(report, rejections)
        return self._report(report)

    def _taken_over(self, refused: PartitionTakenOver) -> StepReport:
        """Drop the batch the lake refused (see the module docstring): nothing of it
        was written, and its records of the partitions this loader still holds are read
        again at the next step, from the positions the lake has."""
        log.warning(
            "partition taken over by another loader: %s; its batch is dropped",
            ", ".join(refused.shards),
        )
        metrics.PARTITIONS_TAKEN_OVER.inc(len(refused.shards))
        self._positions = None
        self._failed_commits = 0
        self._suspects.clear()
        last = self._last
        return self._report(StepReport(lag_records=last.lag_records, lag_seconds=last.lag_seconds))

    def _hold_new_tables(
        self, shaped: list[Shaped], full: bool, now: float
    ) -> tuple[list[Shaped], list[Shaped]]:
        """The tables to commit now, and the new tables whose records wait.

        Creating a table costs the lake's catalog far more than appending to one (13 ms
        of CPU with an empty lake, 40 ms with 2,000 tables, here), so a burst of new
        tables would hold every record behind it in the journal for as long as the
        loader takes to create them all: one client's thousand new tables kept everybody
        else's records waiting a minute. So each step appends to every existing table it
        read, and creates at most ``loader_new_tables_per_commit`` new ones, taken from
        the accounts in turn (one account's burst does not hold another's first table);
        the others wait for the next steps, their records re-read in place.

        Waiting is bounded: once the oldest waiting record is older than
        ``loader_new_tables_hold_s``, or the batch fills a whole read (the records behind
        could not be reached anyway), a step creates up to ``loader_batch_max_tables``.
        """
        new = [t for t in shaped if t.new]
        limit = max(1, self._settings.loader_new_tables_per_commit)
        if len(new) <= limit:
            return shaped, []
        oldest = min(min(t.found.received_s, default=now) for t in new)
        if full or now - oldest > self._settings.loader_new_tables_hold_s:
            limit = self._settings.loader_batch_max_tables
            if len(new) <= limit:
                return shaped, []
        turns: dict[int, int] = {}
        order: list[tuple[int, int, Shaped]] = []
        for i, table in enumerate(new):
            turn = turns.get(table.found.account_id, 0)
            turns[table.found.account_id] = turn + 1
            order.append((turn, i, table))
        order.sort(key=lambda o: (o[0], o[1]))
        created = {id(t) for _, _, t in order[:limit]}
        committed = [t for t in shaped if not t.new or id(t) in created]
        return committed, [t for t in new if id(t) not in created]

    def _commit_holding(
        self,
        shaped: list[Shaped],
        held: list[Shaped],
        moved: dict[str, int],
        waiting: int,
        now: float,
    ) -> StepReport:
        """Commit ``shaped`` with load marks and leave the positions where they are, so
        that the next step reads the held tables' records again (and skips what the
        marks cover). The batch's import errors and bulk-import ids wait for the step
        that moves the positions, as its records do."""
        error = self._commit_apart(shaped, moved, now)
        if error is not None:
            self._failed_commits += 1
            raise LakeError(error)
        self._failed_commits = 0
        self._suspects.clear()
        rejections = list(chain.from_iterable(t.rejections for t in shaped))
        # The records behind this batch are the ones that wait for nothing but the loader.
        _, beyond_ms = self._reader.pending({**(self._positions or {}), **moved})
        oldest_held = min(min(t.found.received_s, default=now) for t in held)
        report = StepReport(
            rows=sum(t.rows.rows.num_rows for t in shaped),
            rejected=len(rejections),
            conflicts=sum(t.conflicts for t in shaped),
            lag_records=waiting,
            lag_seconds=0.0 if beyond_ms is None else max(0.0, now - beyond_ms / 1000),
            held_tables=len(held),
            held_seconds=max(0.0, now - oldest_held),
        )
        log.info(
            "created %d new tables; %d more wait (their oldest record: %.1f s)",
            sum(t.new for t in shaped),
            len(held),
            report.held_seconds,
        )
        _count(report, rejections)
        return self._report(report)

    def _isolate(
        self, shaped: list[Shaped], routed: Routed, moved: dict[str, int], now: float
    ) -> tuple[list[Shaped], list[Rejection]] | None:
        """Commit the tables of a batch that keeps failing apart, to find the ones the
        lake refuses (see the module docstring).

        Returns the tables committed and the import errors of the tables set aside; None
        when the step's time is up before every table is decided.
        """
        deadline = time.monotonic() + ISOLATION_BUDGET_S
        done: list[Shaped] = []
        set_aside: list[Rejection] = []
        # The whole batch failed already: start with its halves.
        pending = _halves(shaped) if len(shaped) > 1 else [shaped]
        while pending:
            if time.monotonic() > deadline:
                log.info("still committing tables apart; going on at the next step")
                return None
            group = pending.pop()
            error = self._commit_apart(group, moved, now)
            if error is None:
                done.extend(group)
            elif len(group) > 1:
                pending.extend(_halves(group))
            elif group[0].key not in self._suspects:
                # Once more, after the others, before blaming it: a moment's trouble
                # in the lake must not cost a table its rows.
                self._suspects[group[0].key] = error
                pending.insert(0, group)
            else:
                set_aside.extend(self._set_aside(group[0], error, routed, now))
        return done, set_aside

    def _commit_apart(self, tables: list[Shaped], moved: dict[str, int], now: float) -> str | None:
        """Commit ``tables`` with their load marks; the lake's error, or None."""
        marks = [
            LoadMark(
                shard=shard,
                seq=seq,
                database_name=t.rows.database,
                table_name=t.rows.table,
                time=int(now),
            )
            for t in tables
            for shard, seq in moved.items()
        ]
        batch = Batch(
            [t.rows for t in tables],
            list(chain.from_iterable(t.rejections for t in tables)),
            marks=marks,
            read_from=Batch.reading(self._positions or {}, moved),
        )
        try:
            self._lake.commit(batch)
        except PartitionTakenOver:
            raise
        except LakeError as e:
            if not self._lake.landed(batch):
                return str(e)
            log.warning("the lake reported an error for a commit that landed: %s", e)
        for t in tables:
            self._marks.setdefault(t.key, {}).update(moved)
        return None

    def _set_aside(self, table: Shaped, error: str, routed: Routed, now: float) -> list[Rejection]:
        database, name = table.key
        detail = f"the lake refused the rows: {_short(error)}"
        log.error("setting aside rows for %s.%s: %s", database, name, detail)
        verdict = Reject(LOAD_FAILED, detail, table.found.account_id)
        return [*table.rejections, *routed.rejected(table.found.rows, verdict, now)]

    def _skip_marked(self, routed: Routed) -> None:
        """Drop the rows that load marks say are in the lake already (an isolation that
        was interrupted before its last commit)."""
        group = routed.envelopes.group
        skipped: list[tuple[TableKey, int]] = []
        for key, marks in self._marks.items():
            found = routed.tables.get(key)
            if found is None:
                continue
            loaded = []
            for n, i in enumerate(found.rows):
                place = group(i)
                if place.seq <= marks.get(place.shard, -1):
                    loaded.append(n)
            if loaded:
                skipped.append((key, len(loaded)))
                routed.tables[key] = found.without(loaded)
        if skipped:
            # One line a step: a burst of new tables re-reads thousands of marked tables.
            (database, table), _ = skipped[0]
            log.info(
                "skipping %d rows of %d tables loaded already (the first: %s.%s)",
                sum(n for _, n in skipped),
                len(skipped),
                database,
                table,
            )

    def _forget_marks(self) -> None:
        """Forget the marks the positions have passed."""
        done = self._positions or {}
        self._marks = {
            key: marks
            for key, marks in self._marks.items()
            if any(seq > done.get(shard, -1) for shard, seq in marks.items())
        }

    def _sift(self, groups: Sequence[JournalGroup], now: float) -> imports.Sifted:
        """The batch without bulk imports loaded already (loader/imports.py)."""
        return imports.sift_batch(groups, self._router, self._lake, now)

    def _sift_resent(self, routed: Routed, now: float) -> duplicates.Sifted:
        """Drop resent SDK events from ``routed`` (loader/duplicates.py)."""
        if self._record_ids is None:
            return duplicates.Sifted()
        return duplicates.sift(routed, self._record_ids, now)

    def _current_positions(self) -> dict[str, int]:
        if self._positions is None:
            if not self._upgraded:
                # Before any entry is loaded: entries journaled by an older tdedge load
                # into tables as this one shapes them (lake/upgrades.py).
                self._lake.upgrade(self._clock())
                self._upgraded = True
            self._positions = self._lake.positions()
            self._marks = self._lake.marks()
            self._forget_marks()
        return self._positions

    def _shape(self, routed: Routed, now: float) -> tuple[list[Shaped], list[Rejection]]:
        """Each table's rows, and the import errors of tables set aside.

        A table whose rows cannot be built is set aside at once (the same records would
        fail the same way again); the other tables load.
        """
        shaped: list[Shaped] = []
        refused: list[Rejection] = []
        tables: dict[int, int] = {}  # account → its tables, the batch's new ones counted
        for (database, table), found in routed.tables.items():
            if not found.rows:
                continue
            rejections: list[Rejection] = []
            try:
                existing = self._lake.columns(database, table)
                if existing is None and not self._room_for_table(found.account_id, tables, now):
                    limit = self._settings.max_tables_per_account
                    detail = (
                        f"account {found.account_id} has {limit} tables, as many as it may "
                        f"have (max_tables_per_account): {database}.{table} is not created"
                    )
                    verdict = Reject(TABLE_LIMIT, detail, found.account_id)
                    refused.extend(routed.rejected(found.rows, verdict, now))
                    continue
                found, rejections = self._narrow(database, table, found, existing, routed, now)
                if not found.rows:
                    refused.extend(rejections)
                    continue
                built = to_columns(found.records, found.received_s, existing, found.ids)
            except Exception as e:
                log.exception("cannot shape the rows of %s.%s; setting them aside", database, table)
                detail = f"the loader could not shape the rows: {_short(repr(e))}"
                verdict = Reject(LOAD_FAILED, detail, found.account_id)
                refused.extend([*rejections, *routed.rejected(found.rows, verdict, now)])
                continue
            doors = door_runs(routed.envelopes.items, found.rows)
            rows = TableRows(database, table, built.table, doors=doors)
            shaped.append(Shaped(rows, found, rejections, existing is None, built.conflicts))
        return shaped, refused

    def _room_for_table(self, account_id: int, tables: dict[int, int], now: float) -> bool:
        """Whether ``account_id`` may have one table more; counts it in ``tables``."""
        count = tables.get(account_id)
        if count is None:
            databases = self._directory.databases_of(account_id, now)
            count = self._lake.table_count(databases)
        room = count < self._settings.max_tables_per_account
        tables[account_id] = count + 1 if room else count
        return room

    def _narrow(
        self,
        database: str,
        table: str,
        found: TableInput,
        existing: Columns | None,
        routed: Routed,
        now: float,
    ) -> tuple[TableInput, list[Rejection]]:
        """``found`` without the records that would take the table past
        ``max_table_columns``, and their import errors."""
        limit = self._settings.max_table_columns
        added = () if found.ids is None else (RECORD_ID,)
        wide = too_wide(found.records, existing, limit, added)
        if not wide:
            return found, []
        detail = (
            f"the record would take {database}.{table} past {limit} columns (max_table_columns)"
        )
        verdict = Reject(TOO_MANY_COLUMNS, detail, found.account_id)
        rejections = routed.rejected([found.rows[i] for i in wide], verdict, now)
        return found.without(wide), rejections

    def _report(self, report: StepReport) -> StepReport:
        metrics.LOADER_LAG_RECORDS.set(report.lag_records)
        metrics.LOADER_LAG_SECONDS.set(report.lag_seconds)
        metrics.LOADER_NEW_TABLES_WAITING.set(report.held_tables)
        metrics.LOADER_NEW_TABLES_WAIT_SECONDS.set(report.held_seconds)
        self._last = report
        return report

    def run(self, stop: threading.Event) -> None:
        """Load until ``stop`` is set; compacts the lake and writes the heartbeat.

        A compaction pass starts every ``compaction_interval_s`` and runs a slice
        (``compaction_slice_s``) at a time, a loading step between two slices.
        """
        interval = self._settings.compaction_interval_s
        next_compaction = self._clock() + interval
        compaction: Iterator[Slice] | None = None
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
            if compaction is None and now >= next_compaction:
                compaction = self._lake.compaction(
                    now, self._settings.compaction_slice_s, self._expiries(now)
                )
            if compaction is not None and not self._compact_slice(compaction, now):
                compaction = None
                next_compaction = self._clock() + interval
            if failures:
                stop.wait(min(MAX_BACKOFF_S, self._settings.loader_poll_s * 2**failures))
            elif compaction is None and report is not None and not report.more:
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
        """A whole compaction pass now (``run`` does it a slice at a time)."""
        compaction = self._lake.compaction(now, expiries=self._expiries(now))
        while self._compact_slice(compaction, now):
            pass

    def _compact_slice(self, compaction: Iterator[Slice], now: float) -> bool:
        """One slice of a compaction pass; False once the pass is over.

        At its end, forget the bulk-import ids past their retention in the edge's
        ledger too (either forgetting first is safe: a retry the ledger no longer knows
        is journaled and dropped by the loader; one the lake no longer knows is
        answered by the ledger). Failures are logged and tried again next time.
        """
        try:
            done = next(compaction)
        except StopIteration:
            self._forget_imports(now)
            self._forget_record_ids(now)
            return False
        except Exception:
            log.exception("lake compaction failed; will try again")
            return False
        log.debug("compaction %s: %d tables", done.step, len(done.tables))
        return True

    def _expiries(self, now: float) -> dict[tuple[str, str], int]:
        """(database, table) → the time before which its rows are past its retention."""
        if self._retention is None:
            return {}
        try:
            rules = self._retention.all()
        except Exception:
            log.exception("reading the tables' retentions failed; will try again")
            return {}
        return {(r.database, r.table): r.cutoff(now) for r in rules}

    def _forget_imports(self, now: float) -> None:
        if self._ledger is None:
            return
        try:
            forgotten = self._ledger.forget(now - self._settings.bulk_import_retention_s)
        except Exception:
            log.exception("forgetting old bulk-import ids failed; will try again")
            return
        if forgotten:
            log.info("forgot %d bulk-import ids past their retention", forgotten)

    def _forget_record_ids(self, now: float) -> None:
        if self._record_ids is None:
            return
        try:
            forgotten = self._record_ids.forget(now - self._settings.record_uuid_window_s)
        except Exception:
            log.exception("forgetting old record_uuids failed; will try again")
            return
        if forgotten:
            log.info("forgot %d record_uuids past their window", forgotten)

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


def door_runs(items: Sequence[Envelope], rows: Sequence[int]) -> tuple[tuple[str, int], ...]:
    """The doors of ``items[rows]``, as runs in order (TableRows.doors): one run for
    the usual table, whose records all come in by one door; the loop runs per run."""
    doors = map(_door, map(items.__getitem__, rows))
    return tuple((door, sum(1 for _ in run)) for door, run in groupby(doors))


def _last_seqs(groups: Sequence[JournalGroup]) -> dict[str, int]:
    # read() returns each shard oldest first, so the last group of a shard is its newest.
    return {group.shard: group.seq for group in groups}


def within_tables(
    groups: list[JournalGroup],
    limit: int,
    is_new: Callable[[TableKey], bool] = lambda _: False,
    new_limit: int | None = None,
    marks: Mapping[TableKey, Mapping[str, int]] | None = None,
) -> list[JournalGroup]:
    """The oldest of ``groups`` whose records go to at most ``limit`` tables (at least
    one group), in their order.

    Taken oldest first across shards (by each group's first arrival) and always a
    prefix of each shard's groups: the positions move past every group a batch holds,
    so a batch must never skip one.

    Tables that do not exist yet (``is_new``) count only up to ``new_limit`` of them: a
    step creates no more than that many (the rest wait, ``Loader._hold_new_tables``), so
    more of them would not make the commit longer, and counting them would stop the
    batch from reaching the records behind them. Nor do tables whose records in a group
    the load ``marks`` say are loaded already: the batch skips them.
    """
    if sum(len(g.envelopes) for g in groups) <= limit:
        return groups  # cannot name more tables than it has records
    queues: dict[str, deque[JournalGroup]] = {}
    for group in groups:
        queues.setdefault(group.shard, deque()).append(group)
    tables: set[TableKey] = set()
    new: set[TableKey] = set()
    cap = limit if new_limit is None else new_limit
    kept: set[int] = set()
    while queues:
        shard = min(queues, key=lambda s: _arrival(queues[s][0]))
        queue = queues[shard]
        head = queue[0]
        names = set(map(_table_of, head.envelopes)) - tables - new
        if marks:
            names = {n for n in names if marks.get(n, {}).get(head.shard, -1) < head.seq}
        fresh = {n for n in names if is_new(n)}
        old = names - fresh
        if kept and len(tables) + len(old) + min(cap, len(new) + len(fresh)) > limit:
            break
        tables |= old
        new |= fresh
        kept.add(id(queue.popleft()))
        if not queue:
            del queues[shard]
    if len(kept) == len(groups):
        return groups
    return [g for g in groups if id(g) in kept]


_table_of = attrgetter("database", "table")
_door = attrgetter("door")


def _arrival(group: JournalGroup) -> int:
    return group.envelopes[0].received_ms if group.envelopes else 0


def _halves(tables: list[Shaped]) -> list[list[Shaped]]:
    half = len(tables) // 2
    return [tables[half:], tables[:half]]


def _short(error: str) -> str:
    """An error cut to about MAX_DETAIL_CHARS, its beginning and its end: SQLite names
    the cause after the statement it quotes."""
    if len(error) <= MAX_DETAIL_CHARS:
        return error
    half = MAX_DETAIL_CHARS // 2
    return f"{error[:half]} … ({len(error) - 2 * half} characters) … {error[-half:]}"


def _count(report: StepReport, rejections: Sequence[Rejection]) -> None:
    metrics.LOADER_BATCHES.inc()
    metrics.ROWS_WRITTEN.inc(report.rows)
    if report.conflicts:
        metrics.TYPE_CONFLICTS.inc(report.conflicts)
    if report.duplicates:
        metrics.IMPORT_DUPLICATES.inc(report.duplicates)
    if report.record_duplicates:
        metrics.RECORD_DUPLICATES.inc(report.record_duplicates)
    for reason, n in Counter(r.reason for r in rejections).items():
        metrics.REJECTIONS.labels(reason=reason).inc(n)
