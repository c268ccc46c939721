"""Job results as objects of the S3 bucket a shared lake keeps its files in, so that
every node reads what any node's runner wrote.

Under the lake's prefix, in ``tdedge_results/``: a name no account's database can have
(``tdedge`` starts reserved names), for a job's SQL may open its databases' folders
under the same prefix, and a folder named like a database would be that database's.
DuckLake's clean-up of unreferenced files (``ducklake_delete_orphaned_files``, which
the lake's compaction calls) looks at Parquet files only: the results are left alone.

A result is written to a nameless local temporary file, then uploaded (in parts when
large): S3 shows an object only once its upload completed, so a reader finds the whole
result or none. A runner killed mid-upload leaves an unfinished multipart upload, which
no reader sees; the expiry aborts those with the results of their age.

Credentials, region and endpoint come from the standard AWS variables, as for the
lake's own files (lake/location.py); a self-hosted server (``AWS_ENDPOINT_URL``) is
addressed path-style.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from tdedge.results.format import ResultWriter
from tdedge.results.store import ResultStoreDown

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

FOLDER = "tdedge_results/"
# The region when no AWS variable names one, as for the lake's files (lake/location.py,
# which the edge's modules may not import: this module is theirs too, through the API).
DEFAULT_REGION = "us-east-1"
# Seconds to wait for an S3 server's connection and answer; a request that fails is
# retried by botocore's standard mode (throttling, 5xx, connection errors).
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 5
# Results up to this size go up in one PUT; larger ones in parts of it.
PART_BYTES = 16 * 1024 * 1024
_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def split(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in a slash or empty) of ``s3://bucket/prefix/``."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, (prefix.rstrip("/") + "/" if prefix.strip("/") else "")


def client(environ: Mapping[str, str]) -> S3Client:
    """An S3 client from the AWS variables in ``environ``. boto3 is imported here, at
    first use (seconds on a busy machine), not when an edge worker starts."""
    import boto3
    import botocore.config

    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
    config = botocore.config.Config(
        region_name=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        # A self-hosted S3 server's buckets are no DNS names: the bucket goes in the path.
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    made: S3Client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
    return made


def object_name(job_id: int, attempt: int) -> str:
    """A result's name under the lake's prefix."""
    return f"{FOLDER}{job_id}.{attempt}.msgpack.gz"


class ResultObjects:
    """Results as ``<lake prefix>tdedge_results/{job}.{attempt}.msgpack.gz``."""

    def __init__(self, lake_data: str, staging: Path, s3: S3Client | None = None) -> None:
        self.bucket, lake_prefix = split(lake_data)
        self.lake_prefix = lake_prefix
        self.prefix = lake_prefix + FOLDER
        self.where = f"s3://{self.bucket}/{self.prefix}"
        self._staging = staging
        self._client = s3
        self._made = threading.Lock()

    @property
    def _s3(self) -> S3Client:
        """The client, made at first use: an edge worker that never serves a result
        never loads the S3 service model."""
        with self._made:
            if self._client is None:
                self._client = client(os.environ)
            return self._client

    def key(self, job_id: int, attempt: int) -> str:
        return self.lake_prefix + object_name(job_id, attempt)

    def writer(self, job_id: int, attempt: int) -> ResultWriter:
        self._staging.mkdir(parents=True, exist_ok=True)
        # Nameless (unlinked at once): a runner killed while writing leaves nothing here.
        file = tempfile.TemporaryFile(dir=self._staging)  # noqa: SIM115 (the writer closes it)
        key = self.key(job_id, attempt)

        def publish() -> int:
            try:
                file.flush()
                size = file.tell()
                file.seek(0)
                self._s3.upload_fileobj(file, self.bucket, key, Config=_transfer())
            except _ERRORS as e:
                raise ResultStoreDown(f"cannot store the result in {self.where}: {e}") from e
            finally:
                file.close()
            return size

        return ResultWriter(file, publish, file.close)

    def size(self, job_id: int, attempt: int) -> int | None:
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self.key(job_id, attempt))
        except botocore.exceptions.ClientError as e:
            if _status(e) == 404:
                return None
            raise ResultStoreDown(f"cannot read {self.where}: {e}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise ResultStoreDown(f"cannot read {self.where}: {e}") from e
        return int(head["ContentLength"])

    def read(self, job_id: int, attempt: int, start: int, end: int) -> bytes:
        try:
            got = self._s3.get_object(
                Bucket=self.bucket, Key=self.key(job_id, attempt), Range=f"bytes={start}-{end}"
            )
            body: bytes = got["Body"].read()
        except botocore.exceptions.ClientError as e:
            if _status(e) == 404:  # expired since its size was asked
                raise FileNotFoundError(self.key(job_id, attempt)) from e
            raise ResultStoreDown(f"cannot read {self.where}: {e}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise ResultStoreDown(f"cannot read {self.where}: {e}") from e
        return body

    def expire(self, written_before: float) -> int:
        """Every node's runner expires: deleting what another deleted a moment ago is
        no error on S3."""
        try:
            old: list[ObjectIdentifierTypeDef] = [
                {"Key": item["Key"]}
                for page in self._s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix
                )
                for item in page.get("Contents", [])
                if _before(item["LastModified"], written_before)
            ]
            for at in range(0, len(old), 1000):  # at most 1,000 keys a request
                self._s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": old[at : at + 1000], "Quiet": True}
                )
            self._abort_uploads(written_before)
        except _ERRORS as e:
            raise ResultStoreDown(f"cannot expire results in {self.where}: {e}") from e
        return len(old)

    def _abort_uploads(self, started_before: float) -> None:
        found: Any = self._s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        for upload in found.get("Uploads", []):
            if _before(upload["Initiated"], started_before):
                self._s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )

    def close(self) -> None:
        with self._made:
            if self._client is not None:
                self._client.close()


def _transfer() -> TransferConfig:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, use_threads=False
    )


def _before(when: datetime, cutoff: float) -> bool:
    return when.timestamp() < cutoff


def _status(e: botocore.exceptions.ClientError) -> int | None:
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None
