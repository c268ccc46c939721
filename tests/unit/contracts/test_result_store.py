"""Both result stores (the data dir's folder, and S3 on a real SeaweedFS server) keep a
job's result whole once written, serve byte ranges of it, never show one half-written,
and expire results past their retention."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdedge.results.format import render
from tdedge.results.objects import ResultObjects
from tdedge.results.store import ResultFiles, ResultStore
from tests import seaweed
from tests.unit.running_job import running_job

DAY = 86400.0
LIMIT = 1 << 20


@pytest.fixture(params=["files", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ResultStore]:
    if request.param == "files":
        made: ResultStore = ResultFiles(tmp_path / "results")
    else:
        s3: seaweed.SeaweedFS = request.getfixturevalue("s3_server")
        for name, value in s3.environ().items():
            monkeypatch.setenv(name, value)
        made = ResultObjects(f"s3://{s3.new_bucket()}/lake/", tmp_path / "staging")
    yield made
    made.close()


def write(store: ResultStore, job_id: int, rows: list[list[object]], attempt: int = 1) -> int:
    writer = store.writer(job_id, attempt)
    writer.write(rows)
    return writer.close()


def test_a_result_is_read_whole_and_in_ranges(store: ResultStore) -> None:
    rows: list[list[object]] = [[i, f"row {i}", None] for i in range(2000)]
    size = write(store, 7, rows)
    assert store.size(7, 1) == size > 0
    whole = store.read(7, 1, 0, size - 1)
    assert len(whole) == size
    assert (
        b"".join(store.read(7, 1, at, min(at + 999, size - 1)) for at in range(0, size, 1000))
        == whole
    )
    csv = render(whole, "csv", len(rows), ["n", "s", "x"], True, LIMIT).decode()
    assert csv.splitlines()[:2] == ["n,s,x", "0,row 0,"]
    assert gzip.decompress(whole)  # TD's msgpack.gz: a gzip stream


def test_a_result_not_yet_closed_or_aborted_is_not_there(store: ResultStore) -> None:
    writer = store.writer(8, 1)
    writer.write([[1]] * 10_000)
    assert store.size(8, 1) is None  # half-written: never served
    writer.abort()
    assert store.size(8, 1) is None
    assert store.size(9, 1) is None  # never written


def test_a_rewrite_replaces_the_result_of_its_attempt(store: ResultStore) -> None:
    write(store, 10, [[1]])
    size = write(store, 10, [[1], [2], [3]])
    assert store.size(10, 1) == size
    assert (
        render(store.read(10, 1, 0, size - 1), "json", 3, ["n"], False, LIMIT) == b"[1]\n[2]\n[3]\n"
    )


def test_results_are_expired_by_the_time_they_were_written(store: ResultStore) -> None:
    write(store, 11, [[1]])
    write(store, 12, [[2]])
    assert store.expire(time.time() - DAY) == 0
    assert store.size(11, 1) is not None
    # Object stores keep their own write times: the cut-off is moved instead.
    assert store.expire(time.time() + 60) == 2
    assert store.size(11, 1) is None and store.size(12, 1) is None
    assert store.expire(time.time() + 60) == 0


def test_files_left_by_a_dead_runner_expire_and_other_files_stay(tmp_path: Path) -> None:
    store = ResultFiles(tmp_path)
    now = time.time()

    def written(name: str, at: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (at, at))
        return path

    old = written("1.msgpack.gz", now - 8 * DAY)
    left_by_a_dead_runner = written("2.msgpack.tmp4242", now - 8 * DAY)
    recent = written("3.msgpack.gz", now - 6 * DAY)
    other = written("notes.txt", now - 30 * DAY)
    assert store.expire(now - 7 * DAY) == 2
    assert not old.exists() and not left_by_a_dead_runner.exists()
    assert recent.exists() and other.exists()
    assert ResultFiles(tmp_path / "missing").expire(now) == 0


def test_on_s3_results_are_under_the_lake_prefix_by_job_and_attempt(
    s3_server: seaweed.SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    store = ResultObjects(f"s3://{bucket}/lake/", tmp_path)
    try:
        first = write(store, 5, [[1]], attempt=1)
        # A runner that lost the job's lease and finishes anyway writes its own attempt.
        second = write(store, 5, [[1], [2]], attempt=2)
        assert (store.size(5, 1), store.size(5, 2)) == (first, second)
        assert s3_server.objects(bucket) == [
            "lake/tdedge_results/5.1.msgpack.gz",
            "lake/tdedge_results/5.2.msgpack.gz",
        ]
        assert list(tmp_path.iterdir()) == []  # nothing staged is left behind
        # An upload a killed runner left unfinished is never seen, and is aborted with
        # the results of its age.
        s3 = store._s3
        s3.create_multipart_upload(Bucket=bucket, Key="lake/tdedge_results/6.1.msgpack.gz")
        assert store.size(6, 1) is None
        store.expire(time.time() + 60)
        left = s3.list_multipart_uploads(Bucket=bucket, Prefix="lake/tdedge_results/")
        assert left.get("Uploads", []) == []
    finally:
        store.close()


def test_on_s3_an_unreachable_store_is_an_error_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdedge.results.store import ResultStoreDown

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = ResultObjects("s3://nowhere/lake/", tmp_path)
    try:
        with pytest.raises(ResultStoreDown, match="s3://nowhere/lake/tdedge_results/"):
            store.size(1, 1)
        writer = store.writer(1, 1)
        writer.write([[1]])
        with pytest.raises(ResultStoreDown):
            writer.close()
    finally:
        store.close()


def test_the_lakes_clean_up_of_unreferenced_files_leaves_the_results_alone(
    tmp_path: Path,
) -> None:
    """Results on S3 sit under the lake's prefix, where compaction deletes the files no
    commit references (here on local files, globbed the same way)."""
    from tdedge.config import Settings
    from tdedge.lake.lake import Lake
    from tdedge.results.objects import FOLDER

    settings = Settings(data_dir=str(tmp_path / "data"))
    lake = Lake.open(settings)
    try:
        results = settings.lake_data_dir / FOLDER
        results.mkdir(parents=True)
        kept = results / "1.1.msgpack.gz"
        kept.write_bytes(b"x")
        orphan = settings.lake_data_dir / "db" / "t" / "never-committed.parquet"
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"x")
        lake.compact(time.time() + settings.lake_retention_s + DAY)
    finally:
        lake.close()
    assert not orphan.exists()  # the clean-up ran
    assert kept.exists()


def test_a_job_whose_result_cannot_be_stored_ends_in_error_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdedge.config import Settings
    from tdedge.lake.lake import Lake
    from tdedge.query.session import Scope, Session

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    settings = Settings(data_dir=str(tmp_path / "data"))
    Lake.open(settings).close()
    store = ResultObjects("s3://nowhere/lake/", tmp_path / "staging")
    session = Session(settings, Scope(1, frozenset({"web"})), 1, store)
    job = running_job(query="SELECT 1 AS n")
    try:
        result = session.run(job, lambda: None)
    finally:
        session.close()
        store.close()
    assert result.status == "error"
    assert (result.error or "").startswith(
        "cannot store the result in s3://nowhere/lake/tdedge_results/"
    )
