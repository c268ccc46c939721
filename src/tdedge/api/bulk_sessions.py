"""``/v3/bulk_import/…``: TD's Bulk Import API, as td-client's ``BulkImportAPI`` and
pytd's ``bulk_import`` writer call it.

A session (control/bulk_sessions.py) takes parts until it is frozen, is performed and
committed:

- ``upload_part`` reads the part whole (api/bulk_parts.py: bounded inflating, records
  split in bounded memory) and counts its records and error records, so a part that is
  not gzipped msgpack maps is refused on upload, with its reason; then stores it as
  uploaded. The 200 comes once it is durable. A refused part leaves one import-error
  row (its reason and what it was, never its bytes).
- ``perform`` adds up those counts at once, in its request: the session is ``ready``
  and its job, created ``success``, is visible through the jobs API, where td-client
  waits for it.
- ``commit`` journals the session's records (error records too, as import errors with
  their reasons) part by part and publishes them whole (journal/sqlite.py), all under
  the session's token as ``import_id``. The loader loads one account's token once
  (loader/imports.py), so a commit retried, or journaled again after a worker died
  between journaling and answering, never loads twice. The session is ``committing``
  until the loader has recorded every one of its records in the lake, in the same
  transactions as the rows (read back by ``show`` and ``list``): then ``committed``.

Every call takes a master key (a write key gets 403) and sees only its account's
sessions; another account's session or database is missing (404), as elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import msgspec

from tdedge.api import bulk_parts
from tdedge.api.bulk_import import parts
from tdedge.api.bulk_parts import Checked, checked, part_records
from tdedge.api.callers import Caller
from tdedge.api.context import Api, Request, valid_name
from tdedge.api.wire import ApiError, not_found, ok
from tdedge.config import Settings
from tdedge.control.bulk_sessions import (
    NOT_PERFORMED,
    SESSION_FROZEN,
    PartInfo,
    Session,
    WrongStatus,
)
from tdedge.control.jobs import JobResult
from tdedge.edge.http import HTTPError, Response
from tdedge.errors import AlreadyExists, JournalUnavailable, LimitReached, NotFound
from tdedge.journal.envelope import Envelope

DOOR = "bulk_import"
JOB_TYPE = "bulk_import"
# TD refuses names under 3 characters; pytd names its sessions ``session-<uuid>``.
SESSION_NAME_RULE = "3 to 128 letters, digits, '_', '-' or '.', not starting with '.' or '-'"
_SESSION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{2,127}")
# td-client refuses a '/' and a second '.' in a part name before sending it.
PART_NAME_RULE = "1 to 255 letters, digits, '_', '-' or '.'"
_PART_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
DISK_FULL = "disk_full"

_json = msgspec.json.Encoder()


@contextlib.contextmanager
def _answered() -> Iterator[None]:
    """The store's refusals as TD answers them (td-client maps 404, 409 and 403 to its
    own exceptions; anything else is an APIError with the status)."""
    try:
        yield
    except NotFound as e:
        raise ApiError(404, "not_found", str(e)) from None
    except AlreadyExists as e:
        raise ApiError(409, "already_exists", str(e)) from None
    except LimitReached as e:
        raise ApiError(403, e.code, str(e)) from None
    except WrongStatus as e:
        raise ApiError(422, e.code, str(e)) from None


def session_name(text: str) -> str:
    if _SESSION_NAME.fullmatch(text) is None:
        raise ApiError(
            400, "invalid_name", f"invalid bulk import name {text!r}: {SESSION_NAME_RULE}"
        )
    return text


def part_name(text: str) -> str:
    if _PART_NAME.fullmatch(text) is None:
        raise ApiError(400, "invalid_name", f"invalid part name {text!r}: {PART_NAME_RULE}")
    return text


def session_json(session: Session) -> dict[str, Any]:
    """A session as TD shows and lists it."""
    return {
        "name": session.name,
        "database": session.database,
        "table": session.table,
        "status": session.status,
        "upload_frozen": session.frozen,
        "job_id": None if session.job_id is None else str(session.job_id),
        "valid_records": session.valid_records,
        "error_records": session.error_records,
        "valid_parts": session.valid_parts,
        "error_parts": session.error_parts,
    }


def _named(name: str) -> dict[str, Any]:
    return {"name": name, "bulk_import": name}


# Handlers run in worker threads (api/door.py).
def create(api: Api, req: Request) -> Response:
    name = session_name(req.args[0])
    database = api.owned_database(req.caller, req.args[1])
    table = valid_name(req.args[2], "table")
    # As TD: the table must exist (pytd creates it first); a typo is a 404 now rather
    # than a table nobody meant.
    if api.catalog.table(database, table) is None:
        raise not_found(f"table '{database}.{table}'")
    # TD's other parameter (mode=append, which pytd sends) is what happens here anyway.
    s = api.settings
    now = time.time()
    # Old sessions go before the new one is counted against the account's limit.
    api.sessions.expire(now, s.bulk_session_retention_s, s.bulk_session_expiry_s)
    with _answered():
        api.sessions.create(
            account_id=req.caller.account_id,
            name=name,
            database=database,
            table=table,
            token=f"{DOOR}:{secrets.token_hex(16)}",
            now=now,
            max_sessions=s.bulk_sessions_per_account,
        )
    return ok(_named(name))


def show(api: Api, req: Request) -> Response:
    with _answered():
        session = api.sessions.find(req.caller.account_id, session_name(req.args[0]))
    return ok(session_json(_settled(api, session)))


def list_sessions(api: Api, req: Request) -> Response:
    found = api.sessions.of_account(req.caller.account_id)
    return ok({"bulk_imports": [session_json(_settled(api, s)) for s in found]})


def delete(api: Api, req: Request) -> Response:
    name = session_name(req.args[0])
    with _answered():
        api.sessions.delete(req.caller.account_id, name)
    return ok(_named(name))


def list_parts(api: Api, req: Request) -> Response:
    name = session_name(req.args[0])
    with _answered():
        session = api.sessions.find(req.caller.account_id, name)
    return ok({**_named(name), "parts": api.sessions.part_names(session.id)})


def delete_part(api: Api, req: Request) -> Response:
    name = session_name(req.args[0])
    part = part_name(req.args[1])
    with _answered():
        session = api.sessions.find(req.caller.account_id, name)
        api.sessions.delete_part(session, part, time.time())
    return ok({**_named(name), "part_name": part})


def freeze(api: Api, req: Request) -> Response:
    name = session_name(req.args[0])
    with _answered():
        api.sessions.freeze(req.caller.account_id, name, time.time())
    return ok(_named(name))


def unfreeze(api: Api, req: Request) -> Response:
    name = session_name(req.args[0])
    with _answered():
        api.sessions.unfreeze(req.caller.account_id, name, time.time())
    return ok(_named(name))


def perform(api: Api, req: Request) -> Response:
    """Count the session's records (counted part by part on upload) and record the
    perform as a job that has run: td-client waits for it through the jobs API."""
    name = session_name(req.args[0])
    caller = req.caller
    with _answered():
        session = api.sessions.find(caller.account_id, name)
    # The database may have been deleted, or given up, since the session was created.
    api.owned_database(caller, session.database)
    now = time.time()
    with _answered():
        session = api.sessions.perform(caller.account_id, name, now)
    job = api.jobs.create(
        account_id=caller.account_id,
        key_id=caller.key_id,
        type=JOB_TYPE,
        database=session.database,
        query=name,
        now=now,
        finished=JobResult(status="success", num_records=session.valid_records),
    )
    api.sessions.set_job(session.id, job.id)
    return ok({**_named(name), "job_id": str(job.id)})


def error_records(api: Api, req: Request) -> Response:
    """The performed session's error records: gzipped msgpack maps, as TD answers."""
    name = session_name(req.args[0])
    with _answered():
        session = api.sessions.find(req.caller.account_id, name)
    if not session.performed:
        raise ApiError(
            422,
            NOT_PERFORMED,
            f"bulk import session '{name}' is {session.status}: perform it first",
        )
    s = api.settings
    found = bulk_parts.error_records(
        api.sessions.bodies(session.id), s, s.bulk_error_records_max_bytes
    )
    packer = msgpack.Packer()
    with _answered():
        body = gzip.compress(b"".join(packer.pack(r) for r in found), compresslevel=6)
    return 200, [("content-type", "application/octet-stream")], body


def _settled(api: Api, session: Session) -> Session:
    """``session``, committed once the loader has loaded every record its commit
    journaled (rows and import errors alike)."""
    if session.status != "committing":
        return session
    expected = session.expected
    if expected == 0 and not session.published:
        return session
    key = (session.account_id, session.database, session.table, session.token)
    if api.catalog.loaded_records(key) < expected:
        return session
    api.sessions.committed(session.id, time.time())
    return api.sessions.get(session.account_id, session.name) or session


# On the event loop (api/door.py): these read a body or journal records.
async def upload_part(api: Api, caller: Caller, args: tuple[str, ...], body: bytes) -> Response:
    name, part = session_name(args[0]), part_name(args[1])
    received_ms = time.time_ns() // 1_000_000
    with _answered():
        session = await asyncio.to_thread(api.sessions.find, caller.account_id, name)
    try:
        counts = await asyncio.to_thread(_store_part, api, session, part, body)
    except ApiError as e:
        await _keep_refused(api, caller, session, part, body, received_ms, e)
        raise
    return ok(
        {
            **_named(name),
            "part_name": part,
            "records": counts.records,
            "error_records": counts.error_records,
        }
    )


def _store_part(api: Api, session: Session, part: str, body: bytes) -> bulk_parts.Counts:
    s = api.settings
    with _answered():
        if session.frozen or session.status != "uploading":
            raise WrongStatus(
                f"bulk import session '{session.name}' is frozen: its parts cannot change "
                "(unfreeze it first)",
                SESSION_FROZEN,
            )
        # The limits are checked again when the part is stored; here they spare a
        # refused part the work of being read.
        api.sessions.part_room(
            session, part, len(body), s.bulk_session_max_parts, s.bulk_account_max_bytes
        )
    room_for(s, len(body))
    counts = bulk_parts.count(body, s)
    info = PartInfo(
        name=part, bytes=len(body), records=counts.records, error_records=counts.error_records
    )
    with _answered():
        api.sessions.put_part(
            session, info, body, time.time(), s.bulk_session_max_parts, s.bulk_account_max_bytes
        )
    return counts


def room_for(settings: Settings, size: int) -> None:
    """503 unless storing ``size`` bytes leaves the data dir the free space the journal
    keeps (``journal_min_free_bytes``): a part must not take the disk records need."""
    if shutil.disk_usage(settings.root).free < settings.journal_min_free_bytes + size:
        raise ApiError(
            503,
            DISK_FULL,
            "the data dir is nearly full: retry later",
            [("retry-after", str(settings.retry_after_s))],
        )


async def commit(api: Api, caller: Caller, args: tuple[str, ...]) -> Response:
    name = session_name(args[0])
    try:
        await asyncio.to_thread(_commit, api, caller, name)
    except JournalUnavailable as e:
        raise api.services.unavailable(e) from e
    return ok(_named(name))


def _commit(api: Api, caller: Caller, name: str) -> None:
    """Journal the session's records once per commit (see the module docstring)."""
    with _answered():
        session = api.sessions.find(caller.account_id, name)
    api.owned_database(caller, session.database)
    attempt = secrets.token_hex(8)
    with _answered():
        started = api.sessions.begin_commit(caller.account_id, name, attempt, time.time())
    if started is None:
        return  # committed, or journaled by an earlier commit
    try:
        with _answered():
            records = _journal(api, caller, started, attempt)
    except BaseException:
        api.sessions.abort_commit(started.id, attempt, time.time())
        raise
    api.sessions.published(started.id, attempt, records, time.time())


def _journal(api: Api, caller: Caller, session: Session, attempt: str) -> int:
    """Every record of the session into the journal, published whole: how many."""
    s = api.settings
    received_ms = time.time_ns() // 1_000_000

    def envelope(item: Checked, index: int) -> Envelope:
        return Envelope(
            received_ms,
            DOOR,
            session.database,
            session.table,
            caller.key_hash,
            item.json,
            reject=item.reason,
            import_id=session.token,
            import_index=index,
            import_attempt=attempt,
        )

    found = (
        item for body in api.sessions.bodies(session.id) for item in checked(part_records(body, s))
    )
    staged = api.services.journal.stage()
    try:
        for part in parts(found, envelope):
            staged.add(part)
        if staged.records:
            staged.publish()
        else:
            staged.discard()
    except BaseException:
        staged.discard()
        raise
    return staged.records


async def _keep_refused(
    api: Api,
    caller: Caller,
    session: Session,
    part: str,
    body: bytes,
    received_ms: int,
    e: ApiError,
) -> None:
    """One import-error row for a refused part: its reason and what it was, not its
    bytes (binary, and possibly large)."""
    summary = {
        "bulk_import": session.name,
        "part_name": part,
        "body_bytes": len(body),
        "message": e.message,
    }
    env = Envelope(
        received_ms,
        DOOR,
        session.database,
        session.table,
        caller.key_hash,
        _json.encode(summary),
        reject=e.code,
    )
    # When the journal is full the client still gets its own error.
    with contextlib.suppress(HTTPError):
        await api.services.append(env)
