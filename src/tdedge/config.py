"""One frozen Settings object, built once at start-up and passed down.

Nothing in tdedge reads the environment at import time: the CLI builds Settings from
its options (falling back to ``TDEDGE_DATA_DIR``), and ``serve`` hands the same object
to its worker processes and the loader as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

AuthMode = Literal["async", "sync"]
EngineMode = Literal["inline", "process"]
# What a ``serve`` may run, in the order they start: the HTTP doors, the loader, the
# query job runner and the p13n engine process. A node runs all of them unless told
# otherwise (``--roles``).
ROLES = ("edge", "loader", "jobs", "engine")

DEFAULT_DATA_DIR = "./tdedge-data"
SETTINGS_ENV = "TDEDGE_SETTINGS_JSON"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: str = DEFAULT_DATA_DIR
    # The control database's URL (--control, TDEDGE_CONTROL); empty: the SQLite file in
    # the data dir. Every table of the control plane follows it (backends.py): nodes
    # given one PostgreSQL URL share accounts, keys, databases, jobs, p13n and sessions.
    control: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # The roles this serve runs (ROLES, in their order); the others run elsewhere, on
    # the same data dir or on the shared backends.
    roles: tuple[str, ...] = ROLES

    # Doors: the main port serves every door, chosen by Host; each entry here adds a
    # port that serves one door whatever the Host ("records", "p13n", "cdp", "api",
    # "legacy").
    door_ports: dict[str, int] = msgspec.field(default_factory=dict)
    # Set only inside the listener process of a dedicated door port.
    fixed_door: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    # Edge.
    auth: AuthMode = "async"
    max_body_bytes: int = 1024 * 1024
    # JSON nested deeper than this is refused as bad input (too_deep). Recursive
    # decoders give up near 1,000 levels, at a depth that depends on the caller's stack
    # (the loader and the p13n engine decode records again); no real event nests 100.
    # At least 8: the ingest door needs that much room to cut a deep event out.
    max_json_depth: int = 100
    # gzip members in one request body. Clients send one; a body of thousands of empty
    # members costs a decompressor each and carries nothing (400 invalid_gzip).
    gzip_max_members: int = 64
    # What a request refused at the door leaves in the import errors (edge/refusals.py):
    # the first bytes of its body, fewer when its key was refused, as anyone can send
    # those in bulk with made-up keys.
    refused_keep_bytes: int = 64 * 1024
    refused_key_keep_bytes: int = 1024
    # Refusals kept as rows, per second, per client address and for all of them
    # (token buckets, per worker). Past them refusals are only counted, and one summary
    # row per address and door every interval says how many and why: a flood of refused
    # requests costs the journal a bounded number of rows, and operators still see it.
    refusals_kept_per_s: float = 10.0
    refusals_kept_burst: int = 100
    refusals_kept_total_per_s: float = 100.0
    refusals_summary_interval_s: float = 60.0
    # The time one client address's refused requests may take of a worker, as a share,
    # after a burst (edge/throttle.py). Past it its requests wait their turn before they
    # are read, and one that would wait past refusal_max_wait_s is answered 429
    # (source_throttled) unread: one client flooding a door with requests it refuses
    # cannot keep the worker from everyone else. 0 turns this off.
    refusal_share: float = 0.1
    # The burst is worker time spent at once: while it lasts a flooding address has the
    # worker to itself. 1 s of it held a well-behaved client's requests up to ~0.5 s;
    # 20 ms keeps them within their usual tail, and a client with a few refused requests
    # now and then never waits (its debt is paid before its next request).
    refusal_burst_s: float = 0.02
    refusal_max_wait_s: float = 5.0
    # How long a sync-auth edge trusts its in-memory key cache before reloading it.
    key_cache_ttl_s: float = 5.0
    # Slow clients. Each open connection holds one of a worker's max_connections slots,
    # so every stage of a request has a deadline: a client that sends slowly, or not at
    # all, gives its slot back within seconds instead of holding it for good.
    # The request head (request line and headers), from the connection's start or the
    # previous answer: an idle keep-alive connection is closed after it too.
    header_timeout_s: float = 10.0
    # The longest pause while a body arrives (a body up to 64 KiB, read in one call,
    # must arrive whole within it), and the whole body: 408 body_timeout past either.
    # 60 s is a 5 MiB records upload at ~90 KiB/s; slower links need more.
    body_idle_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    # Connections one worker holds at once. Past it the worker accepts no more: new
    # connections wait in the kernel's listen queue until a slot frees (the deadlines
    # above bound how long that takes), and beyond the queue the kernel drops them. An
    # idle connection costs the worker ~20 KB.
    max_connections: int = 4096
    # Draining: after SIGTERM a node answers /readyz 503 and keeps serving this long
    # before it stops, so that a load balancer takes it out of its pool first and no
    # client's request meets a closed port. The shipped deploy/haproxy.cfg notices in
    # at most its check interval times its fall count (2 s x 2) plus one check's
    # timeout: 5 s covers it. 0 stops at once (no balancer in front).
    drain_grace_s: float = 5.0

    # Journal. Past either bound the edge answers 503 + Retry-After instead of 200.
    journal_max_backlog: int = 2_000_000
    journal_min_free_bytes: int = 64 * 1024 * 1024
    retry_after_s: int = 5

    # Loader.
    loader_batch_max_records: int = 100_000
    # ...and about this many bytes of journal entries: with records of up to 1 MiB, a
    # batch bounded by count alone could hold 100 GB. The loader's memory follows this
    # (a few times it, decoded); one journal group larger than it is still read whole.
    loader_batch_max_bytes: int = 64 * 1024 * 1024
    # A batch is committed once full, or once its oldest record has waited
    # loader_batch_max_wait_s while records trickle in, up to loader_batch_busy_wait_s
    # as the arrival rate nears loader_batch_busy_rate records/s: a busy loader makes
    # fewer, larger commits (each costs about the same CPU whatever its size).
    loader_batch_max_wait_s: float = 0.25
    loader_batch_busy_wait_s: float = 1.0
    loader_batch_busy_rate: float = 2_000.0
    loader_poll_s: float = 0.05
    # Tables one commit writes at most (a batch stops at the journal group that would
    # pass it; at least one group). A DuckLake commit costs ~20-35 ms per table it
    # writes here: a batch of one row for each of 1,000 tables took ~30 s, during which
    # the loader neither loaded anything else nor beat its heartbeat.
    loader_batch_max_tables: int = 100
    # New tables one step creates while other records wait behind them; the rest wait
    # for the next steps, appends to existing tables going first (Loader._hold_new_tables:
    # a table costs the catalog 13-40 ms of CPU to create, here). Past
    # loader_new_tables_hold_s of waiting, a step creates up to loader_batch_max_tables.
    loader_new_tables_per_commit: int = 20
    loader_new_tables_hold_s: float = 30.0
    # DuckDB threads of the loader's lake connection. One: a commit's work is mostly
    # serial catalog queries, and more threads only spin and take cores from the edge
    # (a 2,000-row commit used ~50 ms of CPU with 2 threads, ~25 ms with 1, here).
    loader_lake_threads: int = 1
    # The loader's CPU priority (``nice``): on a shared machine the edge's answers come
    # first; the loader catches up in the gaps, and the journal's backlog bound (503)
    # is the back-pressure if it cannot.
    loader_nice: int = 10
    compaction_interval_s: float = 60.0
    # A compaction pass works in slices of about this long (at least one table each),
    # with a loading step between two: loading waits at most a slice and its commit,
    # however many tables the pass has to flush or merge (lake/compaction.py).
    compaction_slice_s: float = 1.0
    # /readyz fails when the loader is this far behind or has not beaten for this long.
    ready_max_lag_s: float = 30.0
    loader_heartbeat_timeout_s: float = 10.0
    # /readyz reports a job runner whose heartbeat is older than this (it beats every
    # second from its scheduling loop).
    jobs_heartbeat_timeout_s: float = 10.0
    # Master keys may create a database by writing to it (as td-js-sdk documents);
    # write-only keys need an existing database.
    auto_create_database_for_master: bool = True
    # Columns a table may have, time included, td_type_conflicts not (loader/limits.py).
    # DuckLake keeps small commits in an SQLite table with one column per table column
    # plus three of its own, and SQLite refuses more than 2,000 columns at commit time:
    # half of that leaves room for DuckLake's columns and any it adds later. A commit's
    # catalog work also grows with the width. Records that would pass it are refused
    # with a reason.
    max_table_columns: int = 1_000
    # Tables and databases one account may have; past them a new table's records are
    # import errors (table_limit) and creating a database is refused. Every table
    # costs every commit: DuckLake reads the whole catalog again after each one (about
    # 0.3 s per commit with 1,000 tables here, growing with the count), and a commit
    # writing to many tables costs ~20 ms per table. One write key must not be able to
    # make thousands of them in seconds and slow loading for every account.
    max_tables_per_account: int = 1_000
    max_databases_per_account: int = 100

    # Lake backends (lake/location.py). The DuckLake catalog's URL: empty, the SQLite
    # file in the data dir; ``sqlite:///path`` another SQLite file; ``postgresql://…``
    # a PostgreSQL database that the lakes of several nodes share.
    lake_catalog: str = ""
    # Where the lake's Parquet files go: empty, the data dir; a folder; or
    # ``s3://bucket/prefix/`` (credentials, region and endpoint from the AWS variables).
    lake_data: str = ""

    # Lake. Commits of at most this many rows per table stay in the catalog instead of
    # writing a tiny Parquet file each; compaction flushes them into files later.
    lake_inlining_row_limit: int = 100
    # DuckLake writes inlined rows into the catalog as SQL text, where each NUL and
    # single quote of a string costs more the more there are (lake/inlining.py): one
    # value of 64 KiB of NULs took 3.5 s to commit, 1 MiB of quotes 97 s. A commit
    # inlines strings holding at most this many of them in all; tables past it are
    # written as Parquet files instead, their values unchanged.
    lake_inlining_max_escapes: int = 1024
    # Compaction expires snapshots older than this and deletes files unreferenced for
    # this long; a query running longer than this may lose a file it is reading.
    lake_retention_s: float = 600.0
    # Compaction deletes import-error rows older than this (lake/retention.py): refused
    # records, unlike a table's rows, are kept only to be looked into.
    import_errors_retention_s: float = 30 * 86400.0

    # Records door and pixel
    # Origins td-js-sdk pages may call tdedge from (CORS: the records door, the server
    # cookie, p13n /public/ routes, CDP lookups); None: any origin.
    cors_origins: tuple[str, ...] | None = None
    # Hosts the pixel's td_redirect may send browsers to ("example.com", "*.example.com");
    # none: every redirect is refused, so tdedge is never an open redirector.
    redirect_hosts: tuple[str, ...] = ()
    # Peers (addresses or CIDR networks) whose X-Forwarded-For is believed for td_ip.
    trusted_proxies: tuple[str, ...] = ()
    # Domain attribute of the global-id cookie; None: the cookie stays on the host.
    cookie_domain: str | None = None

    # REST API and query jobs
    # Jobs run at once, each in its own DuckDB instance with these limits; more wait
    # queued. Keep the timeout under lake_retention_s: files older than that may go.
    job_workers: int = 2
    # Jobs of one account that run at once: under job_workers, so that one account's
    # heavy jobs never hold every slot while another's wait. The runner picks the next
    # job from the account with the fewest running.
    job_account_slots: int = 1
    # Jobs one account may have queued; issuing more is refused (429) until some run.
    job_account_queue: int = 100
    job_threads: int = 1
    job_memory_limit: str = "1GB"
    # TD_IP_TO_* read this MaxMind City database (.mmdb); None: the GeoLite2 City
    # edition the maxminddb-geolite2 package ships (2018: addresses move, so an
    # operator with a current database points here).
    geoip_database: str | None = None
    job_timeout_s: float = 300.0
    # A running job is leased to its runner, which renews the lease every second while
    # it lives. A job whose lease runs out (its node died or was cut off) is queued
    # again by a runner of any node, or failed once it has taken two runners down: a
    # job is never left running for longer than this after its runner is gone.
    job_lease_s: float = 30.0
    job_poll_s: float = 0.05
    # Largest job result one response carries (results are read into memory);
    # beyond it clients fetch msgpack.gz in Range requests, as td-client does.
    job_result_max_bytes: int = 256 * 1024 * 1024
    # Result files are deleted this long after they were written (the job row stays).
    job_result_retention_s: float = 7 * 86400.0
    # Rows one job may write (INSERT, CREATE TABLE AS, a result into a table): they are
    # held in the runner's memory for the one transaction that writes them, so past
    # this the job fails instead of the runner.
    job_write_max_rows: int = 5_000_000
    # Bulk import (PUT /v3/table/import…): the gzip body, and what it may inflate to.
    # The edge streams an upload into the journal, so memory does not grow with these;
    # they bound the work and the journal space one request can take.
    import_max_bytes: int = 64 * 1024 * 1024
    import_max_inflated_bytes: int = 512 * 1024 * 1024
    # One record, as msgpack uploaded and as JSON stored (1 MiB, as the Data Ingestion
    # API's events): a larger one becomes an import error (record_too_large) while the
    # rest of its upload loads, and is never held whole.
    import_max_record_bytes: int = 1024 * 1024
    # The loader remembers an import_with_id upload's unique_id this long (compaction
    # forgets older ones): retries come within hours, and the ids it looks a batch's
    # uploads up in stay bounded. A retry later than this loads again.
    bulk_import_retention_s: float = 30 * 86400.0
    # Bulk Import sessions (/v3/bulk_import/…, api/bulk_sessions.py): parts wait,
    # fsynced, in their own SQLite file until the session is committed, so these bound
    # the disk one account can hold there. A part is one request body (pytd sends
    # parts of 10,000 rows, a few MiB at most); it inflates within
    # import_max_inflated_bytes and its records within import_max_record_bytes.
    bulk_part_max_bytes: int = 64 * 1024 * 1024
    # pytd uploads at most about 200 parts per session.
    bulk_session_max_parts: int = 1_000
    # Sessions an account holds at once, whatever their status (pytd deletes its own
    # once committed; a failed run may leave one behind until the expiry below).
    bulk_sessions_per_account: int = 100
    # Bytes of parts an account holds at once, in all its sessions.
    bulk_account_max_bytes: int = 16 * 1024 * 1024 * 1024
    # A committed session (its status, counts and error records) is kept this long,
    # then deleted with its parts: a commit retried within it is answered at once.
    # At most bulk_import_retention_s, the loader's memory of what it loaded.
    bulk_session_retention_s: float = 7 * 86400.0
    # A session not committed and not touched for this long is deleted with its parts,
    # as TD expires bulk imports after 30 days.
    bulk_session_expiry_s: float = 30 * 86400.0
    # The most error_records answers at once (msgpack, before gzip): the answer is
    # built in memory. The import errors hold every one once the session is committed.
    bulk_error_records_max_bytes: int = 64 * 1024 * 1024
    # The mobile SDKs resend an event they got no answer for (a dropped connection after
    # the server stored it): the same event, with the same record_uuid when
    # enableAutoAppendRecordUUID() is on. The loader stores an account's (database,
    # table, record_uuid) once if the copies come within this window
    # (loader/duplicates.py). The SDKs retry for about a minute, then at the app's next
    # upload (the next time it comes to the foreground or goes to the background, as
    # apps usually call uploadEvents): a day covers apps used daily. Each id costs
    # about 70 bytes on disk for the window, and the loader's work per id grows with
    # how many the window holds (~15 µs of CPU with few, a claim ~35 µs at a million).
    record_uuid_window_s: float = 86400.0
    # The event key the SDK doors read that id from: the SDKs' default column name
    # (enableAutoAppendRecordUUID(name) picks another). Only the SDK doors (the Data
    # Ingestion API and the pre-1.0 mobile route) de-duplicate: elsewhere a
    # record_uuid key is the client's data like any other.
    record_uuid_column: str = "record_uuid"

    # Personalization. "process": one engine process decides for every
    # worker (realtime/host.py); "inline": each worker runs the engine itself.
    p13n_engine: EngineMode = "process"
    # The last p13n decisions each worker keeps for the console (realtime/decisions.py):
    # enough to see what was just answered, and a file small enough to rewrite every
    # second. 0: none kept.
    p13n_decisions_kept: int = 1000
    # Nodes on a shared control database: how long the lease one node's refresher
    # computes the batch facts under lasts unless renewed (every third of it while its
    # node lives). A holder that dies without letting go is replaced within this and
    # a third; shorter: a faster takeover for more renewal writes, and a holder that
    # stalls (a paused VM, an overloaded machine) for that long loses it.
    p13n_refresh_lease_s: float = 15.0
    # Where the real-time profiles live; empty: the SQLite file in the data dir (one
    # node). ``redis://host:port/db``: a Redis server every node shares, so a decision
    # is the same whichever node answers (docs/redis-profiles.md).
    profiles: str = ""
    # Lookup tokens one CDP lookup may name (more: 400 too_many_tokens). Each costs the
    # worker a profile read on its event loop; pages send one token per segment set,
    # a handful at most.
    cdp_max_tokens: int = 20

    # The replicated journal (journal/jetstream.py, docs/jetstream.md). ``journal``:
    # empty, the SQLite files in the data dir; ``nats://h1:4222,nats://h2:4222,...``: a
    # JetStream stream on those servers, created with 3 replicas and file storage.
    journal: str = ""
    journal_stream: str = "TDEDGE_JOURNAL"
    journal_replicas: int = 3
    # Subjects the stream is split into; each edge process publishes to one of them
    # and the loader keeps a position per partition.
    journal_partitions: int = 4
    # How long a group waits for JetStream's ack before it goes to this node's local
    # outbox instead: a leader election takes seconds, and a request should not.
    journal_publish_timeout_s: float = 1.0
    # How long a starting process waits to reach the stream before it takes appends
    # into its outbox (and keeps trying in the background).
    journal_connect_timeout_s: float = 10.0
    # How long the local outbox covers for JetStream: past it, with its oldest group
    # still not forwarded, appends are refused (503). Kept well inside the stream's
    # duplicate window, so a forwarded group whose first publish was stored but not
    # acknowledged is still recognised by its Nats-Msg-Id.
    journal_local_max_age_s: float = 120.0
    journal_duplicate_window_s: float = 600.0
    # One published message holds at most this many bytes of envelopes (NATS refuses
    # messages over the server's max_payload, 1 MiB by default).
    journal_max_message_bytes: int = 768 * 1024
    # A loader's lease on a partition lasts this long unrenewed (renewed every quarter
    # of it): a dead loader's partitions are taken by another within about this time.
    journal_lease_ttl_s: float = 5.0
    # How long a stopping process spends forwarding what its outbox still holds (what
    # is left waits in the file for the next process to take the outbox).
    journal_drain_s: float = 5.0

    log_level: str = "info"
    # The access log (edge/access_log.py): off unless asked for, and at most this many
    # lines a second per worker, the rest counted in the next line written: a flood of
    # requests must not become a flood of log lines (each costs a write to stderr).
    access_log: bool = False
    access_log_per_s: float = 100.0

    # Derived paths: one place decides the data dir's layout.
    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @property
    def control_db(self) -> Path:
        return self.root / "control.sqlite"

    @property
    def control_url(self) -> str:
        return self.control or f"sqlite:///{self.control_db}"

    @property
    def bulk_sessions_db(self) -> Path:
        return self.root / "bulk_sessions.sqlite"

    @property
    def record_ids_db(self) -> Path:
        """The loader's record_uuid ledger (loader/record_ids.py)."""
        return self.root / "record_ids.sqlite"

    # Lake backends: the settings above as a process uses them.
    @property
    def lake_catalog_file(self) -> Path:
        """The SQLite catalog file (the default one when the catalog is PostgreSQL)."""
        for prefix in ("sqlite:///", "sqlite:"):
            if self.lake_catalog.startswith(prefix):
                return Path(self.lake_catalog.removeprefix(prefix))
        return self.root / "lake" / "catalog.sqlite"

    @property
    def lake_catalog_postgres(self) -> bool:
        # postgresql://, postgres:// or SQLAlchemy's postgresql+driver://.
        return self.lake_catalog.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")

    @property
    def lake_data_dir(self) -> Path:
        """The local folder of the lake's files (unused when they are on S3)."""
        if self.lake_data and not self.lake_data_s3:
            return Path(self.lake_data)
        return self.root / "lake" / "data"

    @property
    def lake_data_s3(self) -> bool:
        return self.lake_data.startswith("s3://")

    @property
    def lake_embedded(self) -> bool:
        """Whether the lake is the data dir's own: a SQLite catalog and local files."""
        return not self.lake_catalog_postgres and not self.lake_data_s3

    @property
    def lake_locks(self) -> Path:
        """The folder of the lake's lock files: beside a SQLite catalog, which every
        process that writes it must share; in the data dir for a PostgreSQL one."""
        if self.lake_catalog_postgres:
            return self.root / "lake"
        return self.lake_catalog_file.parent

    @property
    def metrics_dir(self) -> Path:
        """The edge's, or of a serve without the edge one of its own: a second serve on
        the data dir must neither clear the edge's metric files nor mix its own in."""
        if "edge" in self.roles:
            return self.root / "run" / "metrics"
        return self.root / "run" / f"metrics-{'-'.join(self.roles)}"

    @property
    def loader_heartbeat(self) -> Path:
        return self.root / "run" / "loader.json"

    @property
    def jobs_heartbeat(self) -> Path:
        return self.root / "run" / "jobs.json"

    @property
    def engine_process(self) -> bool:
        """Whether the p13n engine runs in a process of its own: the default, as on two
        cores it answered ~40 % more decisions/s than inline engines at the same p99
        at 2,000/s (docs/performance.md, bench/p13n)."""
        return self.p13n_engine == "process"

    @property
    def p13n_socket(self) -> Path:
        return self.root / "run" / "p13n-engine.sock"

    @property
    def job_results_dir(self) -> Path:
        return self.root / "results"

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Settings:
        return msgspec.json.decode(raw, type=cls)


def default_data_dir(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("TDEDGE_DATA_DIR") or DEFAULT_DATA_DIR
