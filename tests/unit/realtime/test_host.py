"""The engine process's host: asks of many connections decided as one group, each
connection answered in one frame, no offers when the configuration moved, and the
stores' error for every ask while they cannot be opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY

from tdedge import backends
from tdedge.config import Settings
from tdedge.realtime import host, validation
from tdedge.realtime.host import EngineHost
from tdedge.realtime.offers import EMPTY
from tdedge.realtime.registry import Registry
from tdedge.realtime.wire import OK, Answer, Ask

EXAMPLE = (Path(__file__).parents[1] / "data" / "p13n-example.yaml").read_text()


class Peer:
    """A worker's connection, as the host sees it: what it was sent, frame by frame."""

    def __init__(self) -> None:
        self.frames: list[list[Answer]] = []

    def send(self, answers: list[Answer]) -> None:
        self.frames.append(answers)


def ask(i: int, body: bytes | None = None, table: str = "pageviews", generation: int = 0) -> Ask:
    event = {"td_client_id": f"c{i % 2}", "product_category": "women"}
    raw = msgspec.json.encode(event) if body is None else body
    return Ask(i, generation, "web", table, raw, [f"td_client_id=c{i % 2}"], False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=str(tmp_path / "data"))
    s.root.mkdir()
    registry = Registry.open(s.control_db)
    registry.apply(validation.parse(EXAMPLE), EXAMPLE)
    registry.close()
    return s


async def settle() -> None:
    for _ in range(3):  # the group runs one loop iteration after the asks arrive
        await asyncio.sleep(0)


def test_asks_of_one_iteration_share_a_group_and_each_peer_gets_one_frame(
    settings: Settings,
) -> None:
    h = EngineHost(settings, backends.profiles, backends.registry)
    a, b = Peer(), Peer()

    async def run() -> None:
        h.take(a, [ask(1), ask(2)])
        h.take(b, [ask(3)])
        await settle()

    try:
        asyncio.run(run())
    finally:
        h.close()
    assert [[x.id for x in f] for f in a.frames] == [[1, 2]]
    assert [[x.id for x in f] for f in b.frames] == [[3]]
    for answer in [*a.frames[0], *b.frames[0]]:
        assert answer.code == OK
        assert "women_shoppers" in msgspec.json.decode(answer.body)["offers"]


def test_asks_the_configuration_no_longer_admits_get_no_offers(settings: Settings) -> None:
    """The worker stored the event before the configuration moved: a 400 would tell
    its caller it was not taken. It gets no offers, and an operator a count."""
    h = EngineHost(settings, backends.profiles, backends.registry)
    peer = Peer()
    unconfigured = REGISTRY.get_sample_value("tdedge_p13n_unconfigured_total") or 0.0

    async def run() -> None:
        h.take(peer, [ask(1, table="not_an_event_table"), ask(2, body=b"[1]"), ask(3)])
        await settle()

    try:
        asyncio.run(run())
    finally:
        h.close()
    answers = {x.id: x for f in peer.frames for x in f}
    assert answers[1].code == OK and answers[1].body == EMPTY
    assert REGISTRY.get_sample_value("tdedge_p13n_unconfigured_total") == unconfigured + 1
    assert answers[2].code == 3004
    assert answers[3].code == OK


def test_stores_that_cannot_open_answer_1002_until_they_can(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "REOPEN_AFTER_S", 0.0)
    p13n_dir = settings.root / "p13n"
    p13n_dir.write_text("a file where the p13n folder should be")
    h = EngineHost(settings, backends.profiles, backends.registry)
    peer = Peer()

    async def run() -> None:
        h.take(peer, [ask(1), ask(2)])
        await settle()
        p13n_dir.unlink()
        h.take(peer, [ask(3)])
        await settle()

    try:
        asyncio.run(run())
    finally:
        h.close()
    assert [(x.id, x.code) for x in peer.frames[0]] == [(1, 1002), (2, 1002)]
    assert [(x.id, x.code) for x in peer.frames[1]] == [(3, OK)]


@pytest.mark.parametrize(
    ("mode", "workers", "expected"),
    [
        ("inline", 1, False),
        ("inline", 4, False),
        ("process", 1, True),
        ("process", 4, True),
    ],
)
def test_which_setting_runs_the_engine_in_its_own_process(
    mode: str, workers: int, expected: bool
) -> None:
    settings = Settings(p13n_engine=mode, workers=workers)  # type: ignore[arg-type]
    assert settings.engine_process is expected
