"""The edge's screen of records by their key with ``--auth async`` (Services._screen):
records whose key may not write are kept as small refusals, not journaled whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tdedge.config import Settings
from tdedge.control.keys import hash_key
from tdedge.edge.services import Services
from tdedge.journal.envelope import Envelope

BIG = b'{"a":"' + b"x" * 10_000 + b'"}'


class NoJournal:
    """The screen decides before anything is journaled."""

    def close(self) -> None:
        return None


def envelope(key: str, record: bytes, reject: str = "") -> Envelope:
    return Envelope(0, "ingest", "db", "t", hash_key(key), record, reject)


def screened(tmp_path: Path, envs: list[Envelope]) -> list[Envelope]:
    async def screen() -> list[Envelope]:  # refusals are counted on the event loop
        services = Services(Settings(data_dir=str(tmp_path)), NoJournal())  # type: ignore[arg-type]
        try:
            return list(services._screen(envs))
        finally:
            services.close()

    return asyncio.run(screen())


def test_a_made_up_key_is_kept_small(tmp_path: Path) -> None:
    kept = screened(tmp_path, [envelope("1/made-up", BIG)])
    assert [e.reject for e in kept] == ["unknown_key"]
    assert len(kept[0].record) < len(BIG)


def test_a_refused_record_does_not_vouch_for_the_next_one_with_its_key(tmp_path: Path) -> None:
    # The first record was refused for itself; the second, with the same made-up key,
    # is still screened by its key.
    kept = screened(
        tmp_path, [envelope("1/made-up", b"{", "invalid_json"), envelope("1/made-up", BIG)]
    )
    assert [e.reject for e in kept] == ["invalid_json", "unknown_key"]
    assert len(kept[1].record) < len(BIG)
