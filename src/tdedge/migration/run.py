"""``migrate``: the checks, then the copies, in the order the package docstring gives."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import msgspec

from tdedge import backends, instance
from tdedge.backup import BackupError, referenced_files
from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake import location, system
from tdedge.lake.catalog import LAKE, LIVE_TABLES
from tdedge.lake.extensions import connect
from tdedge.lake.sql import literal
from tdedge.migration import catalog, control, objects
from tdedge.migration.snapshot import MigrationError, stage
from tdedge.names import SYSTEM_DATABASE
from tdedge.results.objects import object_name

Report = Callable[[str], None]


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    control_rows: dict[str, int]  # per control table
    catalog_rows: dict[str, int]  # per catalog table; empty when copied by an earlier run
    snapshots: int
    files_copied: int
    files_kept: int  # already on the object store (an earlier, interrupted run)
    bytes_copied: int
    results: int  # job result files


def targets(control_url: str, lake_catalog: str, lake_data: str, staging: Path) -> Settings:
    """The settings of a node on the shared backends (its data dir is the staging one)."""
    return Settings(
        data_dir=str(staging), control=control_url, lake_catalog=lake_catalog, lake_data=lake_data
    )


def migrate(source: Settings, target: Settings, report: Report = lambda _: None) -> Summary:
    """Copy ``source``'s embedded data dir onto ``target``'s shared backends. The data
    dir is only read; ``target.data_dir`` is ignored (a staging folder is used)."""
    _check_source(source)
    _check_target(target)
    staging = Path(tempfile.mkdtemp(prefix="tdedge-migrate-"))
    try:
        staged = stage(source, staging / "copy")
        report(f"copied the data dir's SQLite files into {staging}")
        # The node's own folder for the target's lake (its locks), apart from the copy.
        target = msgspec.structs.replace(target, data_dir=str(staging / "node"))
        return _migrate(source, staged, target, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _migrate(source: Settings, staged: Settings, target: Settings, report: Report) -> Summary:
    snapshots = catalog.source_snapshots(staged)
    already = catalog.target_snapshots(target)
    copied_before = bool(snapshots) and already == snapshots
    if not copied_before and not catalog.is_fresh(already):
        raise MigrationError(
            f"the lake catalog {location.catalog_name(target)} already holds a lake "
            f"({len(already or [])} snapshots) that is not this data dir's: migrate copies "
            "into an empty database only; nothing was copied"
        )
    _check_journal(source, staged, lake_made=bool(snapshots))
    uploader = objects.Uploader(target.lake_data)
    _upload_lake(source, staged, uploader, report)
    results = _upload_results(source, staged, uploader)
    report(
        f"object store: {uploader.copied} files copied ({uploader.bytes} bytes), "
        f"{uploader.kept} there already, {results} job results"
    )
    catalog_rows: dict[str, int] = {}
    if copied_before:
        report("lake catalog: copied by an earlier run, kept")
    elif snapshots:
        catalog_rows = catalog.copy_catalog(staged, target)
        report(f"lake catalog: {len(snapshots)} snapshots copied")
    control_rows = control.copy_control(staged, target)
    report("control database: " + ", ".join(f"{n} {name}" for name, n in control_rows.items() if n))
    return Summary(
        control_rows=control_rows,
        catalog_rows=catalog_rows,
        snapshots=len(snapshots),
        files_copied=uploader.copied,
        files_kept=uploader.kept,
        bytes_copied=uploader.bytes,
        results=results,
    )


def _check_source(source: Settings) -> None:
    root = source.root.resolve()
    if not source.control_db.is_file():
        raise MigrationError(f"no tdedge data dir at {root} (no {source.control_db.name})")
    pid = instance.running_pid(source)
    if pid is not None:
        raise MigrationError(
            f"tdedge serve (pid {pid if pid > 0 else 'unknown'}) runs on {root}: stop it "
            "first; migrate copies a data dir nothing writes to"
        )


def _check_target(target: Settings) -> None:
    if not target.control.startswith(("postgresql:", "postgresql+", "postgres:")):
        raise MigrationError("--to-control must be a postgresql:// URL")
    if not target.lake_catalog_postgres:
        raise MigrationError("--to-lake-catalog must be a postgresql:// URL")
    if not target.lake_data_s3 or not objects.s3_path(target.lake_data):
        raise MigrationError("--to-lake-data must be an s3://bucket/prefix/ URL")
    filled = control.target_rows(target)
    if filled:
        listed = ", ".join(f"{table} ({n} rows)" for table, n in sorted(filled.items()))
        raise MigrationError(
            f"the control database {_masked(target.control)} is not empty: {listed}. "
            "migrate copies into an empty database only (a second run, or a database "
            "nodes already use, is refused); nothing was copied"
        )


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _check_journal(source: Settings, staged: Settings, *, lake_made: bool) -> None:
    """Refuse while the journal holds records the loader has not put in the lake: they
    are the old node's own (its journal does not move) and would not be in the copy."""
    reader = backends.journal_reader(staged)
    try:
        waiting, _ = reader.pending(_positions(staged) if lake_made else {})
    finally:
        reader.close()
    if waiting:
        raise MigrationError(
            f"{waiting} records in the journal of {source.root.resolve()} are not in the "
            "lake yet: start tdedge serve on it until tdedge status shows a journal "
            "backlog of 0, stop it, and migrate again"
        )


def _positions(staged: Settings) -> dict[str, int]:
    """The journal positions stored in the staged lake, read without writing to it
    (Lake.open would set a lake without tdedge's tables up, and so add snapshots)."""
    con = connect(location.extensions(staged))
    try:
        # No DATA_PATH: the catalog's own (the data dir's folder, only read from), and
        # nothing made there when it is missing.
        con.execute(f"ATTACH {literal(location.catalog_source(staged))} AS {LAKE} (READ_ONLY)")
        made = con.execute(LIVE_TABLES, [SYSTEM_DATABASE]).fetchall()
        if ("journal_positions",) not in made:
            return {}
        return {
            str(shard): int(seq) for shard, seq in con.execute(system.READ_POSITIONS).fetchall()
        }
    except (duckdb.Error, LakeError) as e:
        raise MigrationError(f"cannot read the data dir's lake: {e}") from e
    finally:
        con.close()


def _upload_lake(
    source: Settings, staged: Settings, uploader: objects.Uploader, report: Report
) -> None:
    if not staged.lake_catalog_file.is_file():
        return
    try:
        files = list(referenced_files(staged.lake_catalog_file))
    except BackupError as e:
        raise MigrationError(str(e)) from e
    for rel, live in files:
        path = source.lake_data_dir / rel
        if not path.is_file():
            if live:
                raise MigrationError(f"lake data file {rel} is missing from {source.lake_data_dir}")
            continue  # only an expired snapshot used it, and compaction deleted it
        uploader.put(path, rel.as_posix())
    report(f"lake data files: {len(files)} named by the catalog")


def _upload_results(source: Settings, staged: Settings, uploader: objects.Uploader) -> int:
    """Each job's result file to where the shared result store looks for it: named by
    the job and the attempt that wrote it (results/objects.py)."""
    folder = source.job_results_dir
    if not folder.is_dir():
        return 0
    attempts = control.job_attempts(staged)
    done = 0
    for path in sorted(folder.glob("*.msgpack.gz")):
        job_id = int(path.name.split(".")[0]) if path.name.split(".")[0].isdigit() else None
        if job_id is None or job_id not in attempts:
            continue  # not a job of this data dir's (its row expired before the result)
        uploader.put(path, object_name(job_id, attempts[job_id]))
        done += 1
    return done
