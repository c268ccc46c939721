"""The engine end to end in one process: stitch, update, evaluate, answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from tdedge.realtime import validation
from tdedge.realtime.batch import ATTRIBUTE, SEGMENT
from tdedge.realtime.engine import Engine, Request
from tdedge.realtime.errors import BatchStoreDown
from tdedge.realtime.offers import MAX_RESPONSE_BYTES
from tdedge.realtime.service import Service, compile_service

EXAMPLE = (Path(__file__).parents[1] / "data" / "p13n-example.yaml").read_text()
T0 = 1_800_000_000_000
D = 86_400_000
CLIENT = "42a508e2-d9b1-4baa-9eb2-6c3fb8bd5e16"


def service_of(text: str) -> Service:
    spec = validation.parse(text).services[0]
    service = compile_service(spec, (), lambda p, m: None)
    assert service is not None
    return service


def decide(
    engine: Engine,
    service: Service,
    event: dict[str, Any],
    now: int,
    table: str = "pageviews",
    public: bool = False,
) -> dict[str, Any]:
    (answer,) = engine.decide(
        [Request(service, table, event, service.event_keys(event), public)], now
    )
    assert isinstance(answer, bytes), answer
    decoded: dict[str, Any] = msgspec.json.decode(answer)
    return decoded


def test_the_documented_answer(engine: Engine) -> None:
    svc = service_of(EXAMPLE)
    engine.batch.replace("web", SEGMENT, "1588214", "q", [(f"td_client_id={CLIENT}", None)], T0)
    engine.batch.replace("web", ATTRIBUTE, "loyalty", "q", [(f"td_client_id={CLIENT}", "high")], T0)
    event = {"td_client_id": CLIENT, "td_url": "https://example.com/retail", "td_path": "/retail"}
    assert decide(engine, svc, event, T0) == {"offers": {}}  # no purchase yet
    decide(engine, svc, {"td_client_id": CLIENT, "td_path": "/checkout/done"}, T0 + 1, "purchases")
    assert decide(engine, svc, event, T0 + 2) == {
        "offers": {
            "offer_for_high_loyalty": {
                "attributes": {"status": "high", "last_seen_category": None},
                "batch_segments": [{"id": "1588214"}],
            }
        }
    }


def test_fixed_strings_and_the_any_section(engine: Engine) -> None:
    svc = service_of(EXAMPLE)
    got = decide(engine, svc, {"email": "a@b.c", "product_category": "women"}, T0)
    assert got == {
        "offers": {
            "women_shoppers": {
                "attributes": {"banner": "New in: women's collection"},
                "batch_segments": [],
            }
        }
    }


def test_the_window_expires_with_the_injected_clock(engine: Engine) -> None:
    svc = service_of(EXAMPLE.replace("window: 7d", "window: 7d, bucket: 1h"))
    engine.batch.replace("web", SEGMENT, "1588214", "q", [("td_client_id=c", None)], T0)
    decide(engine, svc, {"td_client_id": "c", "td_path": "/checkout"}, T0)
    view = {"td_client_id": "c", "td_path": "/home"}
    assert "offer_for_high_loyalty" in decide(engine, svc, view, T0 + 7 * D)["offers"]
    assert "offer_for_high_loyalty" in decide(engine, svc, view, T0 + 7 * D + 3_599_999)["offers"]
    assert decide(engine, svc, view, T0 + 7 * D + 3_600_000) == {"offers": {}}


def test_identity_stitching_merges_counters(engine: Engine) -> None:
    svc = service_of(EXAMPLE)
    decide(engine, svc, {"td_client_id": "c", "amount": 10}, T0, "purchases")
    decide(engine, svc, {"email": "e@x", "amount": 5}, T0 + 1, "purchases")
    decide(engine, svc, {"email": "e@x", "td_client_id": "c", "amount": 1}, T0 + 2, "purchases")
    explained = engine.explain(svc, ["email=e@x"], T0 + 3)
    assert explained.profile is not None
    assert explained.values["total_spend"] == 16
    assert len(engine.store.merges("web")) == 1


def test_public_answers_leave_sensitive_attributes_out(engine: Engine) -> None:
    text = EXAMPLE.replace(
        "{name: last_category, type: single, column: product_category}",
        "{name: last_category, type: single, column: product_category, sensitive: true}",
    ).replace(
        'criteria: {all: [{segment: "1588214"}, '
        "{attribute: purchases_7d, operator: GreaterEqual, value: 1}]}",
        'criteria: {segment: "1588214", not: true}',
    )
    svc = service_of(text)
    event = {"td_client_id": "c", "product_category": "men"}
    private = decide(engine, svc, event, T0)["offers"]["offer_for_high_loyalty"]["attributes"]
    public = decide(engine, svc, event, T0 + 1, public=True)["offers"]["offer_for_high_loyalty"]
    assert private == {"status": None, "last_seen_category": "men"}
    assert public["attributes"] == {"status": None}


def test_answers_stay_under_ten_kilobytes(engine: Engine) -> None:
    sections = "".join(
        f'      - section: s{i}\n        payload: {{strings: {{text: "{"x" * 2000}"}}}}\n'
        for i in range(8)
    )
    text = EXAMPLE.split("    personalizations:\n")[0] + "    personalizations:\n" + sections
    svc = service_of(text)
    (answer,) = engine.decide([Request(svc, "pageviews", {"email": "e"}, ["email=e"])], T0)
    assert isinstance(answer, bytes)
    assert len(answer) <= MAX_RESPONSE_BYTES
    offers = msgspec.json.decode(answer)["offers"]
    assert list(offers) == ["s0", "s1", "s2", "s3"]  # the last sections gave way


def test_unknown_profiles_and_key_events(engine: Engine) -> None:
    text = EXAMPLE.split("    personalizations:\n")[0] + (
        "    personalizations:\n"
        "      - section: returning\n"
        "        accept_unknown: false\n"
        "      - section: on_checkout\n"
        "        key_event: {tables: [purchases], filter: "
        "{column: td_path, operator: StartWith, value: /checkout}}\n"
    )
    svc = service_of(text)
    assert decide(engine, svc, {"email": "n"}, T0)["offers"] == {}
    assert list(decide(engine, svc, {"email": "n"}, T0 + 1)["offers"]) == ["returning"]
    got = decide(engine, svc, {"email": "n", "td_path": "/checkout"}, T0 + 2, "purchases")
    assert list(got["offers"]) == ["returning", "on_checkout"]
    got = decide(engine, svc, {"email": "n", "td_path": "/checkout"}, T0 + 3, "pageviews")
    assert list(got["offers"]) == ["returning"]


def test_explain_changes_nothing(engine: Engine) -> None:
    svc = service_of(EXAMPLE)
    event = {"td_client_id": "c", "product_category": "women"}
    explained = engine.explain(svc, ["td_client_id=c"], T0, "pageviews", event)
    women = explained.sections[1]
    assert (women.what, women.passed) == ("section women_shoppers", True)
    assert explained.sections[0].passed is False
    assert engine.store.find("web", ["td_client_id=c"]) == []


def test_a_batch_store_failure_fails_only_the_answers(engine: Engine) -> None:
    svc = service_of(EXAMPLE)
    engine.batch.close()
    (answer,) = engine.decide([Request(svc, "pageviews", {"email": "e"}, ["email=e"])], T0)
    assert isinstance(answer, BatchStoreDown) and answer.code == 1003
    # The profile was updated all the same: the event is stored, it counts.
    assert engine.store.find("web", ["email=e"])[0].events == 1
