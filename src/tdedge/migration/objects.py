"""Files onto the object store: the lake's data files and the job results, copied byte
for byte (DuckLake keeps each data file's size and footer in its catalog, so a file is
never rewritten, only copied), through pyarrow's S3 client.

The client is set up from the standard AWS variables, as the lake's DuckDB connections
are (lake/location.py): the key, the region (default us-east-1) and, for an S3 server
other than AWS's, the endpoint, which is then addressed path-style.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pyarrow import fs

from tdedge.lake.location import DEFAULT_REGION
from tdedge.migration.snapshot import MigrationError


def s3_filesystem(environ: Mapping[str, str] | None = None) -> fs.S3FileSystem:
    env = os.environ if environ is None else environ
    key = env.get("AWS_ACCESS_KEY_ID")
    secret = env.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        raise MigrationError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    options: dict[str, str] = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MigrationError(
                f"AWS_ENDPOINT_URL must be http(s)://host[:port], not {endpoint!r}"
            )
        options = {"endpoint_override": parts.netloc, "scheme": parts.scheme}
    return fs.S3FileSystem(
        access_key=key or None,
        secret_key=secret or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        region=region,
        **options,
    )


def s3_path(url: str) -> str:
    """``s3://bucket/prefix/`` as pyarrow names it: ``bucket/prefix`` (no scheme, no
    trailing slash)."""
    return url.removeprefix("s3://").strip("/")


class Uploader:
    """Copies local files under one S3 prefix, keeping any object already there with
    the same size (a run resumed after an interruption) and refusing one that differs."""

    def __init__(self, prefix_url: str, filesystem: fs.S3FileSystem | None = None) -> None:
        self._fs = filesystem or s3_filesystem()
        self._prefix = s3_path(prefix_url)
        self.copied = 0
        self.kept = 0
        self.bytes = 0

    def existing(self) -> list[str]:
        """Keys (relative to the prefix) of the objects under the prefix."""
        try:
            selector = fs.FileSelector(self._prefix, recursive=True, allow_not_found=True)
            found = self._fs.get_file_info(selector)
        except OSError as e:
            raise MigrationError(f"cannot list s3://{self._prefix}/: {e}") from e
        return sorted(
            info.path.removeprefix(self._prefix + "/")
            for info in found
            if info.type == fs.FileType.File
        )

    def put(self, local: Path, key: str) -> None:
        target = f"{self._prefix}/{key}"
        size = local.stat().st_size
        try:
            info = self._fs.get_file_info(target)
            if info.type == fs.FileType.File:
                if info.size != size:
                    raise MigrationError(
                        f"s3://{target} exists with {info.size} bytes, not the {size} of "
                        f"{local}: not overwritten; migrate copies into an empty prefix"
                    )
                self.kept += 1
                return
            fs.copy_files(
                str(local.resolve()),
                target,
                source_filesystem=fs.LocalFileSystem(),
                destination_filesystem=self._fs,
            )
        except OSError as e:
            raise MigrationError(f"cannot copy {local} to s3://{target}: {e}") from e
        self.copied += 1
        self.bytes += size
