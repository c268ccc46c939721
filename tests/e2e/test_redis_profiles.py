"""``serve --profiles redis://…``: two nodes (two data dirs) share one Redis, so a
decision is the same whichever node answers; Redis unreachable answers 500 1002."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import redis_server as redis_support
from tests.e2e import p13n_support
from tests.e2e.conftest import free_port
from tests.e2e.p13n_support import CONFIG, P13n

WOMEN = {
    "women_shoppers": {"attributes": {"banner": "New in: women's collection"}, "batch_segments": []}
}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if not redis_support.available():
        pytest.fail("Redis 7 is not installed: run scripts/setup")
    with redis_support.server() as server:
        yield server.url(0)


def node(make_server: Any, tmp_path: Path, name: str, profiles: str) -> P13n:
    """A serve on a data dir of its own, configured like every other node."""
    p = p13n_support.start(make_server, ["--profiles", profiles], data_dir=tmp_path / name)
    p.server.cli("db", "create", "retail")
    p.apply(CONFIG, tmp_path)
    p.token("web", "web")
    return p


def code(r: httpx.Response) -> tuple[int, int]:
    return r.status_code, r.json()["code"]


def test_two_nodes_sharing_redis_decide_from_one_profile(
    make_server: Any, tmp_path: Path, redis_url: str
) -> None:
    first = node(make_server, tmp_path, "first", redis_url)
    second = node(make_server, tmp_path, "second", redis_url)
    bought = first.post(
        {"td_client_id": "shared", "product_category": "women", "amount": 10},
        path="/retail/purchases",
    )
    assert bought.status_code == 200 and bought.json() == {"offers": WOMEN}
    # The second node never saw this person: its answer comes from the shared profile.
    seen = second.post({"td_client_id": "shared", "td_path": "/retail"})
    assert seen.status_code == 200 and seen.json() == {"offers": WOMEN}
    assert first.post({"td_client_id": "other"}).json() == {"offers": {}}
    profile = second.profile("td_client_id=shared", profiles=redis_url)
    assert profile["attributes"]["visits"] == 2  # one event on each node
    assert profile["attributes"]["total_spend"] == 10
    # Stitching is shared too: an email joined on one node finds the person on the other.
    assert second.post({"td_client_id": "shared", "email": "s@example.com"}).status_code == 200
    again = first.post({"email": "s@example.com"})
    assert again.json() == {"offers": WOMEN}
    assert first.profile("email=s@example.com", profiles=redis_url)["attributes"]["visits"] == 4


def test_redis_unreachable_answers_500_1002(make_server: Any, tmp_path: Path) -> None:
    p = node(make_server, tmp_path, "alone", f"redis://127.0.0.1:{free_port()}/0")
    r = p.post({"td_client_id": "nobody-home"})
    assert code(r) == (500, 1002)
    # The event itself was stored before the profile was touched.
    p.server.wait_for(
        "SELECT count(*) AS n FROM retail.pageviews WHERE td_client_id = 'nobody-home'",
        lambda rows: rows[0]["n"] == 1,
    )
