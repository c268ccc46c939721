"""The last p13n decisions of a worker, for the console (api/console.py).

The p13n door is the hot path, so a decision costs one small struct appended to a
bounded deque (``Settings.p13n_decisions_kept``, the newest kept): its answer as the client
got it, and what explaining it needs (service, table, identity keys). About once a
second, when something changed, the worker writes the deque to its own small file
under ``run/p13n-decisions/`` (replaced whole, never half-written); the console, in
whichever worker answers the REST API, reads every worker's file. Nothing goes to the
journal, the lake or the logs: the keys and offers can be personal data, and the
console shows them to their account's master key only.

The explain trace is computed on demand, from the profile as it is when asked
(``Engine.explain``): a decision keeps its keys, not the profile it saw.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from pathlib import Path

import msgspec

from tdedge import numerals

# How often a worker writes its file, at most.
WRITE_EVERY_S = 1.0
_SUFFIX = ".msgpack"


# gc=False: a decision holds strings, bytes and a tuple of strings, never a cycle; kept
# untracked, the ring's thousand entries add nothing to the collector's passes on the
# door's hot path.
class Decision(msgspec.Struct, array_like=True, frozen=True, gc=False):
    at_ms: int
    account_id: int
    service: str
    database: str
    table: str
    keys: tuple[str, ...]  # a tuple: the collector stops tracking it, unlike a list
    answer: bytes  # the answer body: {"offers": {section: [...]}}
    seq: int  # this worker's count: with its pid, the decision's id


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[Decision]).decode


def folder(run_dir: Path) -> Path:
    return run_dir / "p13n-decisions"


class Decisions:
    """One worker's ring of decisions and its file."""

    def __init__(self, run_dir: Path, kept: int) -> None:
        self._folder = folder(run_dir)
        self._ring: deque[Decision] = deque(maxlen=max(0, kept))
        self._kept = kept
        self._seq = 0
        self._written_at = 0.0
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self,
        at_ms: int,
        account_id: int,
        service: str,
        database: str,
        table: str,
        keys: list[str],
        answer: bytes,
    ) -> None:
        if not self._kept:
            return
        self._seq += 1
        self._ring.append(
            Decision(at_ms, account_id, service, database, table, tuple(keys), answer, self._seq)
        )
        self._dirty = True
        if self._timer is not None:
            return  # written when the timer fires
        wait = self._written_at + WRITE_EVERY_S - time.monotonic()
        if wait <= 0:
            self.write()
            return
        try:
            self._timer = asyncio.get_running_loop().call_later(wait, self.write)
        except RuntimeError:  # no event loop (a test's direct call): write now
            self.write()

    def write(self) -> None:
        """Replace this worker's file with the ring; errors cost the console, not the door."""
        self._timer = None
        if not self._dirty:
            return
        self._dirty = False
        self._written_at = time.monotonic()
        # Named when written, not when made: a door made before the server forks its
        # workers writes one file per worker.
        path = self._folder / f"{os.getpid()}{_SUFFIX}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(_encode(list(self._ring)))
            os.replace(temporary, path)
        except OSError:
            pass  # a full disk must not refuse decisions; the console shows older ones


def recent(run_dir: Path, account_id: int, limit: int) -> list[tuple[str, Decision]]:
    """The newest ``limit`` decisions of ``account_id`` across workers, newest first, each
    with its id (``pid-seq``)."""
    found: list[tuple[str, Decision]] = []
    for path in folder(run_dir).glob(f"*{_SUFFIX}"):
        try:
            decisions = _decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue  # a worker replacing it, or gone
        found += [(f"{path.stem}-{d.seq}", d) for d in decisions if d.account_id == account_id]
    found.sort(key=lambda f: f[1].at_ms, reverse=True)
    return found[:limit]


def find(run_dir: Path, account_id: int, ident: str) -> Decision | None:
    """The decision ``ident`` of ``account_id``, while its worker keeps it."""
    pid_text, _, seq_text = ident.partition("-")
    pid, seq = numerals.bigint(pid_text), numerals.bigint(seq_text)
    if pid is None or seq is None:
        return None
    try:
        decisions = _decode((folder(run_dir) / f"{pid}{_SUFFIX}").read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    for d in decisions:
        if d.seq == seq and d.account_id == account_id:
            return d
    return None
