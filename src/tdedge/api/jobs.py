"""``/v3/job/…``: issue, status, show, result, kill, list (td-client ``JobAPI``).

Jobs are rows of the control database (control/jobs.py), run by the job runner
process; results are kept where results/store.py says (the data dir's ``results/``, or
the shared lake's bucket) and read back from there, whichever node ran the job.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from tdedge import numerals
from tdedge.api.context import Api, Request
from tdedge.api.wire import ApiError, not_found, ok, td_date
from tdedge.control import access
from tdedge.control.jobs import Job
from tdedge.edge.http import Response
from tdedge.query.statements import result_target
from tdedge.query.translate import ENGINES, TranslationError
from tdedge.results.format import FORMATS, ResultTooLarge, check_size, render
from tdedge.results.store import ResultStore, ResultStoreDown

# td-client sends priority as a number (-2..2); other clients send the name.
PRIORITIES = {"VERY LOW": -2, "VERY-LOW": -2, "LOW": -1, "NORMAL": 0, "NORM": 0, "HIGH": 1}
PRIORITIES |= {"VERY HIGH": 2, "VERY-HIGH": 2}
CONTENT_TYPES = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
    "msgpack.gz": "application/octet-stream",
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Bound on integer parameters: a page of jobs from..to is to - from + 1 rows, which must
# still fit SQLite's 64-bit integers (past them the query failed, a 500).
MAX_INDEX = 2**62


def issue(api: Api, req: Request) -> Response:
    engine, database_name = req.args
    if engine not in ENGINES:
        raise ApiError(
            400, "unsupported_engine", f"query type {engine!r}: use presto, trino or hive"
        )
    database = api.owned_database(req.caller, database_name)
    query = req.params.get("query", "")
    if not query.strip():
        raise ApiError(400, "missing_query", "the 'query' field is required")
    result_url = req.params.get("result") or None
    if result_url is not None:
        # Only into the account's own tables; silently dropping an export the caller
        # asked for would look like success.
        try:
            target = result_target(result_url).target
        except TranslationError as e:
            raise ApiError(400, "unsupported_result_export", str(e)) from None
        api.owned_database(req.caller, target.database, access.Action.WRITE)
    if api.jobs.queued(req.caller.account_id) >= api.settings.job_account_queue:
        raise ApiError(
            429,
            "too_many_jobs",
            f"{api.settings.job_account_queue} jobs of this account are queued already; "
            "issue more once some have run",
        )
    job = api.jobs.create(
        account_id=req.caller.account_id,
        key_id=req.caller.key_id,
        type=engine,
        database=database,
        query=query,
        now=time.time(),
        priority=_priority(req.params.get("priority")),
        retry_limit=_int(req.params.get("retry_limit"), "retry_limit"),
        result_url=result_url,
    )
    return ok({"job": str(job.id), "job_id": str(job.id), "database": database})


def status(api: Api, req: Request) -> Response:
    job = _job(api, req)
    return ok(
        {
            "job_id": str(job.id),
            "status": job.status,
            "created_at": td_date(job.created_at),
            "updated_at": td_date(job.updated_at),
            "start_at": td_date(job.start_at),
            "end_at": td_date(job.end_at),
            "duration": _duration(job),
            "cpu_time": None,
            "result_size": job.result_size,
            "num_records": job.num_records,
        }
    )


def show(api: Api, req: Request) -> Response:
    return ok(job_json(_job(api, req), req.host))


def job_list(api: Api, req: Request) -> Response:
    start = _int(req.params.get("from"), "from")
    end = _int(req.params.get("to"), "to") if "to" in req.params else start + 19
    if end < start:
        raise ApiError(400, "invalid_range", "'to' is before 'from'")
    wanted = req.params.get("status") or None
    total, jobs = api.jobs.list(req.caller.account_id, start, end - start + 1, wanted)
    return ok(
        {
            "count": total,
            "from": start,
            "to": end,
            "jobs": [job_json(j, req.host) for j in jobs],
        }
    )


def kill(api: Api, req: Request) -> Response:
    job_id = _job_id(req.args[0])
    former = api.jobs.kill(job_id, req.caller.account_id, time.time())
    if former is None:
        raise not_found(f"job {job_id}")
    return ok({"former_status": former, "job_id": str(job_id)})


def result(api: Api, req: Request) -> Response:
    job = _job(api, req)
    fmt = req.params.get("format", "tsv")
    if fmt not in FORMATS:
        raise ApiError(400, "unsupported_format", f"format {fmt!r}: one of {', '.join(FORMATS)}")
    if job.status != "success":
        raise not_found(f"a result of job {job.id} ({job.status})")
    try:
        return _result(api, req, job, fmt)
    except ResultStoreDown as e:
        raise ApiError(503, "result_store_unavailable", str(e)) from None
    except FileNotFoundError:  # expired between its size and its bytes
        raise _gone(api, job) from None


def _gone(api: Api, job: Job) -> ApiError:
    retention = api.settings.job_result_retention_s
    if job.end_at is not None and job.end_at < time.time() - retention:
        return not_found(f"the result of job {job.id}: results are kept {retention / 86400:g} days")
    return not_found(f"the result file of job {job.id}")


def _result(api: Api, req: Request, job: Job, fmt: str) -> Response:
    store = api.results
    size = store.size(job.id, job.attempts)
    if size is None:
        raise _gone(api, job)
    headers = [("content-type", CONTENT_TYPES[fmt])]
    limit = api.settings.job_result_max_bytes
    if fmt == "msgpack.gz":
        return _range(size, req, headers, store, job, limit)
    schema: list[list[str]] = msgspec.json.decode(job.result_schema or "[]")
    header = req.params.get("header", "false").lower() in ("true", "1")
    try:
        if size:  # the gzip trailer says what it inflates to: refused before it is read
            check_size(store.read(job.id, job.attempts, max(0, size - 4), size - 1), limit)
        gz = store.read(job.id, job.attempts, 0, size - 1) if size else b""
        body = render(gz, fmt, job.num_records or 0, [c[0] for c in schema], header, limit)
    except ResultTooLarge as e:
        raise ApiError(
            413,
            "result_too_large",
            f"{e}; fetch format=msgpack.gz with Range requests (td-client download_job_result)",
        ) from None
    return 200, headers, body


def _range(
    size: int,
    req: Request,
    headers: list[tuple[str, str]],
    store: ResultStore,
    job: Job,
    limit: int,
) -> Response:
    """The msgpack.gz result, or the byte range the client asked for (206)."""
    headers = [*headers, ("accept-ranges", "bytes")]
    wanted = req.headers.get("range")
    if not wanted:
        if size > limit:
            raise ApiError(413, "result_too_large", f"{size} bytes: ask for byte ranges")
        return 200, headers, store.read(job.id, job.attempts, 0, size - 1) if size else b""
    m = _RANGE.fullmatch(str(wanted).strip())
    start, end = _parse_range(m, size)
    if start is None or end is None:
        return 416, [*headers, ("content-range", f"bytes */{size}")], b""
    if end - start + 1 > limit:
        raise ApiError(413, "range_too_large", f"ask for at most {limit} bytes at a time")
    headers.append(("content-range", f"bytes {start}-{end}/{size}"))
    return 206, headers, store.read(job.id, job.attempts, start, end)


def _parse_range(m: re.Match[str] | None, size: int) -> tuple[int | None, int | None]:
    if m is None or size == 0:
        return None, None
    first, last = m.groups()
    if not first:  # bytes=-N: the last N bytes; the last 0 bytes are no bytes at all
        if not last or int(last) == 0:
            return None, None
        n = int(last)
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None, None
    return start, end


def job_json(job: Job, host: str) -> dict[str, Any]:
    """A job as TD's ``show`` and ``list`` answer it."""
    return {
        "job_id": str(job.id),
        "type": job.type,
        "query": job.query,
        "status": job.status,
        "url": f"http://{host}/v3/job/show/{job.id}",
        "created_at": td_date(job.created_at),
        "updated_at": td_date(job.updated_at),
        "start_at": td_date(job.start_at),
        "end_at": td_date(job.end_at),
        "duration": _duration(job),
        "cpu_time": None,
        "result_size": job.result_size,
        "num_records": job.num_records,
        # TD's "result" is the export target; empty means "read it from /v3/job/result".
        "result": job.result_url or "",
        "result_url": None,
        "hive_result_schema": job.result_schema,
        "priority": job.priority,
        "retry_limit": job.retry_limit,
        "database": job.database,
        "user_name": job.key_id,
        "organization": None,
        "debug": {"cmdout": "", "stderr": job.error},
        "linked_result_export_job_id": None,
        "result_export_target_job_id": None,
    }


def _duration(job: Job) -> int | None:
    if job.start_at is None or job.end_at is None:
        return None
    return round(job.end_at - job.start_at)


def _job(api: Api, req: Request) -> Job:
    job_id = _job_id(req.args[0])
    job = api.jobs.get(job_id, req.caller.account_id)
    if job is None:
        raise not_found(f"job {job_id}")
    return job


def _job_id(text: str) -> int:
    job_id = numerals.bigint(text)
    if job_id is None:
        raise not_found(f"job {text!r}")
    return job_id


def _int(text: str | None, name: str, low: int = 0, high: int = MAX_INDEX - 1) -> int:
    if text is None or text == "":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be from {low} to {high}")
    return value


def _priority(text: str | None) -> int:
    if text is None or text == "":
        return 0
    named = PRIORITIES.get(text.strip().upper())
    if named is not None:
        return named
    return _int(text, "priority", -2, 2)
