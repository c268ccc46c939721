"""One client address flooding a door with refused requests waits its turn, then gets
429 unread, while other addresses are served at once (edge/throttle.py)."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx

from tests.e2e.conftest import Server
from tests.e2e.p13n_support import MEDIA, start

FLOODER = "127.0.0.2"  # another loopback address: another client to the server
GENEROUS_S = 5.0


def flooder() -> httpx.Client:
    # A connection per request: the server closes the connection of a request it
    # answers unread, and a pooled connection can be handed to the next request in the
    # instant before the client sees it close ("server disconnected"), which is the
    # client pool's race, not the throttle's answer.
    return httpx.Client(
        transport=httpx.HTTPTransport(local_address=FLOODER),
        timeout=60,
        headers={"Connection": "close"},
    )


def bad(client: httpx.Client, server: Server) -> httpx.Response:
    """A record refused at the door (not JSON)."""
    return client.post(
        f"{server.url}/postback/v3/event/test_db/flood",
        content=b"{not json",
        headers={"Content-Type": "application/json", "X-TD-Write-Key": server.write_key},
    )


def test_an_address_past_its_share_of_refusals_is_paced_then_refused_unread(
    make_server: Any,
) -> None:
    # 1 % of the worker and no burst: each refusal (at least 1 ms, and its import-error
    # row's fsync) sets the address back 0.1 s or more; 60 at once cannot all be read
    # within the 5 s a request may wait.
    server: Server = make_server(
        ["--refusal-share", "0.01", "--refusal-burst", "0", "--refusal-summary-interval", "1"]
    )
    with flooder() as client:
        first = bad(client, server)
        assert (first.status_code, first.json()["error"]) == (400, "invalid_json")
        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            answers = list(pool.map(lambda _: bad(client, server), range(60)))
    statuses = [r.status_code for r in answers]
    assert 429 in statuses and set(statuses) <= {400, 429}, statuses
    throttled = next(r for r in answers if r.status_code == 429)
    assert throttled.json()["error"] == "source_throttled"
    assert int(throttled.headers["retry-after"]) >= 1
    assert throttled.headers["connection"] == "close"  # its body is left unread
    # Health checks from the throttled address are still answered at once.
    with flooder() as client:
        assert client.get(f"{server.url}/healthz").status_code == 200

    # Another address is not held up, and neither is what it sends.
    began = time.monotonic()
    good = server.postback("test_db", "beside", {"a": 1}, key=server.write_key)
    assert good.status_code == 200
    assert time.monotonic() - began < GENEROUS_S

    # Operators see the throttled requests: counted, and summarised per address.
    def summarised(errors: list[dict[str, Any]]) -> bool:
        return any(
            e["reason"] == "refusals_not_kept"
            and FLOODER in e["record"]
            and "source_throttled" in e["record"]
            for e in errors
        )

    server.wait_errors(summarised)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'reason="source_throttled"' in metrics


def test_the_flooding_address_is_served_again_once_it_stops(make_server: Any) -> None:
    server: Server = make_server(["--refusal-share", "0.05", "--refusal-burst", "0"])
    with flooder() as client:
        assert bad(client, server).status_code == 400
        # One refusal is charged at most 0.1 s, 2 s of debt at a 5 % share (however slow
        # the disk made its import-error row): a good request waits at most that long,
        # well within the 5 s a request may wait, then is accepted.
        time.sleep(0.5)
        began = time.monotonic()
        r = client.post(
            f"{server.url}/postback/v3/event/test_db/after",
            json={"a": 1},
            headers={"X-TD-Write-Key": server.write_key},
        )
        assert r.status_code == 200
        assert time.monotonic() - began < GENEROUS_S


def test_share_zero_turns_the_throttle_off(make_server: Any) -> None:
    server: Server = make_server(["--refusal-share", "0", "--refusal-burst", "0"])
    with flooder() as client, concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: bad(client, server), range(60)))
    assert {r.status_code for r in answers} == {400}


def test_a_throttled_p13n_request_is_answered_in_the_p13n_format(make_server: Any) -> None:
    # td-js-sdk's fetchPersonalization parses {"code", "message"} and must be able to
    # read the answer cross-origin.
    p = start(make_server, ["--refusal-share", "0.01", "--refusal-burst", "0"])
    url = f"{p.url}/public/retail/pageviews"
    headers = {"Content-Type": MEDIA, "Origin": "https://shop.example"}

    def unsigned(client: httpx.Client) -> httpx.Response:
        return client.post(url, content=b"{}", headers=headers)  # no key: 401

    # A 401 costs no import-error row: each is charged the least, 0.1 s at 1 %, and 60
    # at once are 6 s of turns, barely past the 5 s a request may wait if they do not
    # all arrive together. Twice as many keep 60 waiting until the turns run out.
    with flooder() as client, concurrent.futures.ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(lambda _: unsigned(client), range(120)))
    throttled = [r for r in answers if r.status_code == 429]
    assert throttled, [r.status_code for r in answers]
    assert throttled[0].json().keys() == {"code", "message"}
    assert throttled[0].json()["code"] == 429
    assert throttled[0].headers["access-control-allow-origin"] == "https://shop.example"
    assert int(throttled[0].headers["retry-after"]) >= 1
