"""Prometheus metrics shared by the edge workers and the loader.

``serve`` runs several processes, so prometheus-client runs in multiprocess mode: the
``PROMETHEUS_MULTIPROC_DIR`` variable must be set (by ``tdedge serve``, see
``server.prepare_metrics_dir``) before this module is first imported in any process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("tdedge_requests_total", "HTTP requests answered", ["door", "route", "status"])
JOURNAL_APPENDED = Counter("tdedge_journal_appended_total", "Envelopes made durable")
JOURNAL_COMMIT_BATCH = Histogram(
    "tdedge_journal_commit_batch_size",
    "Envelopes that shared one fsync",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
JOURNAL_COMMIT_SECONDS = Histogram(
    "tdedge_journal_commit_seconds",
    "Time of one group commit's fsync of the journal WAL",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
)
JOURNAL_BACKLOG = Gauge(
    "tdedge_journal_backlog_records",
    "Records in the journal not yet released by the loader",
    ["shard"],
    multiprocess_mode="livemax",
)
JOURNAL_REFUSED = Counter("tdedge_journal_refused_total", "Appends refused with 503", ["reason"])
# The replicated journal (journal/jetstream.py): 1 while a 200 means "on this node's disk,
# to be forwarded to the stream" rather than "on a quorum of the stream's replicas".
JOURNAL_LOCAL = Gauge(
    "tdedge_journal_local",
    "1 while appends go to the node's local outbox instead of the JetStream stream",
    multiprocess_mode="livemax",
)
JOURNAL_OUTBOX = Gauge(
    "tdedge_journal_outbox_records",
    "Records in the node's local outbox not yet forwarded to the JetStream stream",
    multiprocess_mode="livesum",
)
LOADER_LAG_RECORDS = Gauge(
    "tdedge_loader_lag_records", "Records waiting to be loaded", multiprocess_mode="livemax"
)
LOADER_LAG_SECONDS = Gauge(
    "tdedge_loader_lag_seconds",
    "Age of the oldest record waiting to be loaded (but for those waiting for a new table)",
    multiprocess_mode="livemax",
)
LOADER_NEW_TABLES_WAITING = Gauge(
    "tdedge_loader_new_tables_waiting",
    "New tables whose records wait for the loader to create them",
    multiprocess_mode="livemax",
)
LOADER_NEW_TABLES_WAIT_SECONDS = Gauge(
    "tdedge_loader_new_tables_wait_seconds",
    "Age of the oldest record waiting for its new table to be created",
    multiprocess_mode="livemax",
)
ROWS_WRITTEN = Counter("tdedge_rows_written_total", "Rows committed to lake tables")
LOADER_BATCHES = Counter("tdedge_loader_batches_total", "Lake commits made by the loader")
REJECTIONS = Counter(
    "tdedge_rejections_total", "Records sent to the import-errors table", ["reason"]
)
REFUSALS = Counter(
    "tdedge_refusals_total",
    "Requests and events refused at the edge, by how they were kept: row (an import-error "
    "row of its own), summary (counted in a refusals_not_kept row), none (journal full)",
    ["door", "reason", "kept"],
)
CDP_LOOKUPS = Counter(
    "tdedge_cdp_lookups_total",
    "CDP door lookups: per token of an answered request found, not_found or no_key (no "
    "value for its key column); per refused request its reason code",
    ["outcome"],
)
IMPORT_DUPLICATES = Counter(
    "tdedge_import_duplicates_total",
    "Records of a bulk import whose unique_id was loaded already, dropped by the loader",
)
RECORD_DUPLICATES = Counter(
    "tdedge_record_duplicates_total",
    "SDK events whose record_uuid was loaded already (a resend), dropped by the loader",
)
PARTITIONS_TAKEN_OVER = Counter(
    "tdedge_loader_partitions_taken_over_total",
    "Batches of a journal partition dropped at commit: another loader had taken it over",
)
TYPE_CONFLICTS = Counter(
    "tdedge_type_conflicts_total",
    "Values that did not fit their column and were kept in td_type_conflicts",
)


def exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    from prometheus_client import REGISTRY

    return bytes(generate_latest(REGISTRY))
