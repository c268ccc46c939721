"""Backups of a data dir, taken while ``serve`` runs, and their restore.

What a data dir holds, and how each part is copied:

- SQLite files (the journal shards, the lake catalog, the record-id ledger, the
  control store, the bulk-import sessions, the p13n profiles and batch segments):
  SQLite's online backup API, in one step per file, which copies a consistent
  snapshot of the file while other processes keep writing to it (all are in WAL
  mode, so no writer waits for the copy).
- The lake's data files: Parquet files DuckLake never changes once written; the ones
  the copied catalog names are copied after it.
- Job results: files written once.
- ``run/`` (locks, heartbeats, metrics, sockets) belongs to the running processes:
  not copied.

The order makes the parts agree where they depend on each other:

1. The journal shards first. Each holds the entries after the ones the loader had
   released by then, and the loader releases only what the lake's positions cover;
   the catalog, copied next, has positions at least that far. So every entry the
   journal held when the backup began is in the copied lake (seq at or below the
   position) or in the copied journal (above it), and the loader, after a restore,
   loads only the latter: every record acknowledged before the backup began is
   restored exactly once.
2. The lake catalog, then the data files it names.
3. The record-id ledger after the catalog: the loader claims a batch's record_uuids
   before it commits the batch (loader/record_ids.py), so the copy has the claims of
   every batch in the copied lake.
4. The rest: control store, bulk-import sessions, p13n stores, job results.

Restore copies a backup into an empty data dir and mends two things: the catalog
names its data folder by absolute path (DuckLake refuses another one), so the new
folder is written in; and the lake's positions may be past a shard's last seq in the
copied journal (the loader committed records that arrived after step 1), so each
shard's numbering resumes after its position, or the loader would take new records
for ones it loaded already.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import msgspec

from tdedge.config import Settings
from tdedge.errors import TdedgeError
from tdedge.journal.sqlite import continue_after

log = logging.getLogger("tdedge.backup")

# The file that makes a folder a tdedge backup, written last: a backup without it did
# not finish.
MANIFEST = "tdedge-backup.json"
FORMAT = 1
# Folders of a data dir that are not data: the running processes' own.
NOT_DATA = frozenset({"run"})
SQLITE_SUFFIX = ".sqlite"


class BackupError(TdedgeError):
    """A backup or a restore could not be made; nothing half-made is left as if whole."""


class BackupFile(msgspec.Struct, frozen=True):
    path: str  # relative to the data dir
    bytes: int


class Manifest(msgspec.Struct, frozen=True):
    format: int
    tdedge: str
    source: str  # the data dir backed up, as an absolute path
    started_at: float
    finished_at: float
    files: list[BackupFile]


Report = Callable[[str], None]


def backup(settings: Settings, dest: Path, report: Report = lambda _: None) -> Manifest:
    """Copy ``settings``' data dir into ``dest`` (missing or empty), in the order the
    module docstring gives. Works whether or not ``serve`` runs on the data dir."""
    root = settings.root
    if not settings.control_db.exists():
        raise BackupError(f"{root} is not a tdedge data dir (no {settings.control_db.name})")
    if not settings.lake_embedded:
        # Its catalog and files are in services with backups of their own.
        raise BackupError(
            "backup copies an embedded lake only: back up the PostgreSQL catalog and "
            "the S3 bucket with their own tools"
        )
    _require_empty(dest, "backup destination")
    if dest.resolve().is_relative_to(root.resolve()):
        raise BackupError(f"the backup destination {dest} is inside the data dir {root}")
    dest.mkdir(parents=True, exist_ok=True)
    started = time.time()
    files: list[BackupFile] = []

    def copy_sqlite(path: Path) -> None:
        rel = path.relative_to(root)
        files.append(BackupFile(str(rel), _sqlite_copy(path, dest / rel)))
        report(f"copied {rel}")

    try:
        journals = sorted(settings.journal_dir.glob(f"shard-*{SQLITE_SUFFIX}"))
        for path in journals:
            copy_sqlite(path)
        if settings.lake_catalog_file.exists():
            copy_sqlite(settings.lake_catalog_file)
            catalog_copy = dest / settings.lake_catalog_file.relative_to(root)
            lake_data = dest / settings.lake_data_dir.relative_to(root)
            for rel, live in referenced_files(catalog_copy):
                copied = _file_copy(settings.lake_data_dir / rel, lake_data / rel)
                if copied is None and live:
                    raise BackupError(
                        f"lake data file {rel} is missing from {settings.lake_data_dir}"
                    )
                if copied is not None:
                    files.append(
                        BackupFile(str(settings.lake_data_dir.relative_to(root) / rel), copied)
                    )
            report(f"copied the lake's data files ({len(files) - len(journals) - 1})")
        if settings.record_ids_db.exists():
            copy_sqlite(settings.record_ids_db)
        done = {settings.lake_catalog_file, settings.record_ids_db, *journals}
        for path in sorted(_sqlite_files(root)):
            if path not in done:
                copy_sqlite(path)
        if settings.job_results_dir.is_dir():
            for path in sorted(p for p in settings.job_results_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(root)
                copied = _file_copy(path, dest / rel)
                if copied is not None:  # an expired result deleted meanwhile
                    files.append(BackupFile(str(rel), copied))
    except (OSError, sqlite3.Error) as e:
        raise BackupError(f"backup into {dest} failed: {e}") from e
    manifest = Manifest(
        format=FORMAT,
        tdedge=version("tdedge"),
        source=str(root.resolve()),
        started_at=started,
        finished_at=time.time(),
        files=files,
    )
    _write_durably(dest / MANIFEST, msgspec.json.format(msgspec.json.encode(manifest)))
    return manifest


def restore(source: Path, settings: Settings, report: Report = lambda _: None) -> Manifest:
    """Bring the backup in ``source`` back into ``settings``' data dir, which must be
    empty (or missing) and served by nobody.

    The backup is copied into a folder beside the data dir first and mended there,
    then renamed into place: a data dir is never left half-restored, and a server
    started on it meanwhile makes the rename fail instead of being overwritten.
    """
    manifest = read_manifest(source)
    target = settings.root.absolute()
    _require_empty(target, "data dir")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=target.parent))
    try:
        for entry in manifest.files:
            src = source / entry.path
            if not src.is_file() or src.stat().st_size != entry.bytes:
                raise BackupError(f"backup file {entry.path} is missing or has changed size")
            (staging / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staging / entry.path)
        report(f"copied {len(manifest.files)} files")
        staged = Settings(data_dir=str(staging))
        staged.lake_data_dir.mkdir(parents=True, exist_ok=True)
        if staged.lake_catalog_file.exists() and _catalog_made(staged.lake_catalog_file):
            set_data_path(staged.lake_catalog_file, staged.lake_data_dir)
            positions = _lake_positions(staged)
            continue_after(staged.journal_dir, positions)
            report(f"journal numbering resumes after the lake's positions {positions}")
            set_data_path(
                staged.lake_catalog_file, target / staged.lake_data_dir.relative_to(staging)
            )
        _fsync_tree(staging)
        if target.exists():
            # An empty folder is replaced whole by the rename; one that a server filled
            # meanwhile makes the rename fail (ENOTEMPTY), and nothing is overwritten.
            _require_empty(target, "data dir")
        os.rename(staging, target)
        target.chmod(0o700)
    except OSError as e:
        raise BackupError(f"restore into {target} failed: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def read_manifest(source: Path) -> Manifest:
    try:
        raw = (source / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BackupError(f"{source} is not a finished tdedge backup (no {MANIFEST})") from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as e:
        raise BackupError(f"{source / MANIFEST} is damaged: {e}") from e
    if manifest.format != FORMAT:
        raise BackupError(f"backup format {manifest.format} is not {FORMAT}, which this reads")
    return manifest


def referenced_files(catalog: Path) -> Iterator[tuple[Path, bool]]:
    """The data and delete files a DuckLake catalog names, relative to its data
    folder, and whether the current snapshot uses each (files only older snapshots
    use may be gone: DuckLake expires them)."""
    con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        if not _lake_made(con):
            return
        schemas = {
            int(sid): (str(path), bool(rel))
            for sid, path, rel in con.execute(
                "SELECT schema_id, path, path_is_relative FROM ducklake_schema"
            )
        }
        tables: dict[int, Path] = {}
        for tid, sid, path, rel in con.execute(
            "SELECT table_id, schema_id, path, path_is_relative FROM ducklake_table "
            "ORDER BY begin_snapshot"
        ):
            base = _under(Path(), *schemas.get(int(sid), ("", True)))
            tables[int(tid)] = _under(base, str(path), bool(rel))
        for kind in ("ducklake_data_file", "ducklake_delete_file"):
            for tid, path, rel, end in con.execute(
                f"SELECT table_id, path, path_is_relative, end_snapshot FROM {kind}"
            ):
                yield _under(tables.get(int(tid), Path()), str(path), bool(rel)), end is None
        for path, rel in con.execute(
            "SELECT path, path_is_relative FROM ducklake_files_scheduled_for_deletion"
        ):
            yield _under(Path(), str(path), bool(rel)), False
    finally:
        con.close()


def _lake_made(con: sqlite3.Connection) -> bool:
    """Whether DuckLake has set its catalog up (the loader does, soon after start)."""
    found = con.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'ducklake_files_scheduled_for_deletion'"
    ).fetchone()
    return bool(found and found[0])


def _under(base: Path, path: str, relative: bool) -> Path:
    if not relative:
        raise BackupError(f"the lake names a file by absolute path ({path}): not backed up")
    return base / path


def set_data_path(catalog: Path, data: Path) -> None:
    """Write the lake's data folder into its catalog (DuckLake keeps it absolute)."""
    con = sqlite3.connect(catalog)
    try:
        with con:
            con.execute(
                "UPDATE ducklake_metadata SET value = ? WHERE key = 'data_path' AND scope IS NULL",
                (str(data.absolute()) + "/",),
            )
    finally:
        con.close()


def _catalog_made(catalog: Path) -> bool:
    con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        return _lake_made(con)
    finally:
        con.close()


def _lake_positions(settings: Settings) -> dict[str, int]:
    from tdedge.lake.lake import Lake

    lake = Lake.open(settings, read_only=True)
    try:
        return lake.positions()
    finally:
        lake.close()


def _sqlite_files(root: Path) -> Iterator[Path]:
    for path in root.rglob(f"*{SQLITE_SUFFIX}"):
        if path.relative_to(root).parts[0] not in NOT_DATA and path.is_file():
            yield path


def _sqlite_copy(src: Path, dst: Path) -> int:
    """A consistent copy of the SQLite file ``src``, made while others write to it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30.0)
    try:
        target = sqlite3.connect(dst)
        try:
            # One step (pages=-1): the source is read in one read transaction, so the
            # copy is one snapshot and writers of other processes never restart it.
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        source.close()
    _fsync(dst)
    return dst.stat().st_size


def _file_copy(src: Path, dst: Path) -> int | None:
    """Copy ``src``; None when it is gone."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, dst)
    except FileNotFoundError:
        return None
    _fsync(dst)
    return dst.stat().st_size


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    _fsync(tmp)
    tmp.rename(path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        _fsync(path)


def _require_empty(path: Path, what: str) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise BackupError(f"{what} {path} is not a folder")
    entries = list(path.iterdir())
    if not entries:
        return
    if _served(path):
        raise BackupError(f"{what} {path} is in use by a running tdedge server")
    raise BackupError(f"{what} {path} is not empty")


def _served(path: Path) -> bool:
    """Whether a tdedge process holds one of the data dir's locks."""
    for lock in [*path.glob("run/*.lock"), *path.glob("journal/*.lock")]:
        with contextlib.suppress(OSError), lock.open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False
