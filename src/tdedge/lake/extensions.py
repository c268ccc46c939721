"""DuckDB connections that load the pinned extensions from their Python packages.

The machine cannot download anything, and DuckDB would otherwise try to fetch an
extension the first time a statement needs it. Autoinstall and autoload are turned off
and each extension is LOADed from the folder of its ``duckdb_extension_<name>``
package, so the extension always matches the pinned DuckDB version.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from tdedge.errors import LakeError
from tdedge.lake.sql import literal

# Order matters: ducklake reads the sqlite catalog and writes parquet files. A lake on
# PostgreSQL or S3 adds postgres_scanner or httpfs (lake/location.py).
EXTENSIONS = ("parquet", "json", "sqlite_scanner", "ducklake")
# For SQL written by users: the sqlite extension opens any SQLite file on disk whatever
# enable_external_access says, so their connections never have it (lake/scope.py).
USER_EXTENSIONS = ("parquet", "json", "ducklake")

# A lake on PostgreSQL or S3 needs these; the embedded one never does.
_CLUSTER = ("httpfs", "postgres_scanner")

_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


def extension_path(name: str) -> Path:
    """The ``.duckdb_extension`` file shipped by the ``duckdb_extension_<name>`` package."""
    package = f"duckdb_extension_{name}"
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        hint = " (pip install 'tdedge[lake-cluster]')" if name in _CLUSTER else ""
        raise LakeError(f"package {package} is not installed{hint}")
    # The folder is named after the DuckDB version (extensions/v1.5.5/…); globbing it
    # keeps this working when the pin moves.
    found = sorted(Path(spec.origin).parent.glob(f"extensions/*/{name}.duckdb_extension"))
    if not found:
        raise LakeError(f"package {package} holds no {name}.duckdb_extension")
    return found[-1]


def connect(extensions: tuple[str, ...] = EXTENSIONS) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with ``extensions`` (by default every one tdedge
    needs) loaded."""
    try:
        con = duckdb.connect(":memory:", config=_CONFIG)
    except duckdb.Error as e:
        raise LakeError(f"cannot start DuckDB: {e}") from e
    try:
        for name in extensions:
            con.execute(f"LOAD {literal(str(extension_path(name)))}")
    except duckdb.Error as e:
        con.close()
        raise LakeError(f"cannot load DuckDB extension: {e}") from e
    except BaseException:
        con.close()
        raise
    return con
