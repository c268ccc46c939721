"""Where the lake lives: its catalog (SQLite in the data dir, another SQLite file, or
PostgreSQL) and its data files (the data dir, another folder, or S3), as the settings
``lake_catalog`` and ``lake_data`` say.

S3 credentials, region and endpoint come from the standard AWS variables, as every S3
tool reads them, when a connection is opened (never from the settings, which are handed
to child processes as JSON and shown by the CLI): ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``) and ``AWS_ENDPOINT_URL`` for an S3 server other than AWS's,
addressed path-style (bucket in the path), as self-hosted S3 servers need.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from urllib.parse import urlsplit

import duckdb

from tdedge.config import Settings
from tdedge.errors import LakeError
from tdedge.lake.sql import literal

# Every extension a tdedge connection of the lake's own may need, in load order:
# ducklake reads its catalog through the sqlite or postgres one and its files through
# parquet (and httpfs for S3).
_BASE = ("parquet", "json", "sqlite_scanner")
_USER_BASE = ("parquet", "json")
DEFAULT_REGION = "us-east-1"


def extensions(settings: Settings) -> tuple[str, ...]:
    """The extensions a connection that attaches the real catalog loads."""
    return (*_BASE, *_remote(settings, catalog=True), "ducklake")


def user_extensions(settings: Settings) -> tuple[str, ...]:
    """The extensions of a connection that runs SQL written by users. Never the sqlite
    or postgres ones: either would let SQL open a database of its choosing whatever
    ``enable_external_access`` says (lake/scope.py)."""
    return (*_USER_BASE, *_remote(settings, catalog=False), "ducklake")


def _remote(settings: Settings, *, catalog: bool) -> tuple[str, ...]:
    found: list[str] = []
    if settings.lake_data_s3:
        found.append("httpfs")
    if catalog and settings.lake_catalog_postgres:
        found.append("postgres_scanner")
    return tuple(found)


def postgres_dsn(url: str) -> str:
    """A libpq connection URL from ``url``, which may name SQLAlchemy's driver
    (``postgresql+psycopg://``) as the control store's URL does."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def catalog_source(settings: Settings) -> str:
    """The DuckLake ATTACH string of the catalog."""
    if settings.lake_catalog_postgres:
        return f"ducklake:postgres:{postgres_dsn(settings.lake_catalog)}"
    # Absolute: DuckLake and later processes may start in another folder.
    return f"ducklake:sqlite:{settings.lake_catalog_file.resolve()}"


def catalog_name(settings: Settings) -> str:
    """The catalog for messages: a PostgreSQL URL without its password."""
    if settings.lake_catalog_postgres:
        parts = urlsplit(postgres_dsn(settings.lake_catalog))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return f"postgresql://{user}{host}{port}{parts.path}"
    return str(settings.lake_catalog_file)


def data_path(settings: Settings) -> str:
    """The lake's DATA_PATH, ending in a slash: an S3 prefix or an absolute folder (a
    relative one would be resolved against whatever folder a later process starts in)."""
    if settings.lake_data_s3:
        return settings.lake_data if settings.lake_data.endswith("/") else settings.lake_data + "/"
    return str(settings.lake_data_dir.resolve()) + "/"


def prepare_data(settings: Settings) -> None:
    """Make the local data folder; an S3 bucket is the operator's to create."""
    if not settings.lake_data_s3:
        settings.lake_data_dir.mkdir(parents=True, exist_ok=True)


def s3_secret(environ: Mapping[str, str]) -> str:
    """The CREATE SECRET statement for S3 from the AWS variables in ``environ``."""
    options = ["TYPE s3"]
    key = environ.get("AWS_ACCESS_KEY_ID")
    secret = environ.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        raise LakeError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together")
    if key and secret:
        options += [f"KEY_ID {literal(key)}", f"SECRET {literal(secret)}"]
        token = environ.get("AWS_SESSION_TOKEN")
        if token:
            options.append(f"SESSION_TOKEN {literal(token)}")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    options.append(f"REGION {literal(region)}")
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LakeError(f"AWS_ENDPOINT_URL must be http(s)://host[:port], not {endpoint!r}")
        # A self-hosted S3 server is addressed path-style: its buckets are no DNS names.
        options += [
            f"ENDPOINT {literal(parts.netloc)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if parts.scheme == 'https' else 'false'}",
        ]
    return f"CREATE OR REPLACE SECRET tdedge_lake_s3 ({', '.join(options)})"


def configure(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Give ``con`` what it needs to reach the lake's files (S3 credentials)."""
    if not settings.lake_data_s3:
        return
    try:
        con.execute(s3_secret(os.environ))
    except duckdb.Error as e:
        raise LakeError(f"cannot set up S3 access for the lake: {e}") from e


# The file in a data dir naming its node to a shared lake (see journal_prefix).
NODE_FILE = "node-id"


def journal_prefix(settings: Settings) -> str:
    """What this node's journal shards are called in a lake other nodes share.

    Each node has a journal of its own whose shards are named alike on every node
    (``shard-00``…), and the loader keeps its journal positions in the lake. In a
    shared lake each node's shards are named after the node, an id made once and kept
    in its data dir, so that one node never takes another's positions for its own. An
    embedded lake (the default catalog) keeps the plain names, as it always did, and so
    does a replicated journal (``settings.journal``), whose partitions all nodes share.
    """
    if not settings.lake_catalog:
        return ""
    if settings.journal:
        # One journal stream that every node shares: its partitions are the same
        # shards whichever node's loader holds them, so their positions are too.
        return ""
    path = settings.root / NODE_FILE
    try:
        node = path.read_text().strip()
    except FileNotFoundError:
        node = ""
    if not node:
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = uuid.uuid4().hex[:12]
        # Exclusive create: two processes starting at once agree on the first one made.
        try:
            with path.open("x") as handle:
                handle.write(candidate + "\n")
            node = candidate
        except FileExistsError:
            node = path.read_text().strip()
    return f"{node}/"
