"""The answer body: built from encoded parts, exactly as encoding the whole would be."""

from __future__ import annotations

from typing import Any

import msgspec

from tdedge.realtime.offers import EMPTY, MAX_RESPONSE_BYTES, answer, join


def parts(offers: dict[str, Any]) -> list[bytes]:
    return [msgspec.json.encode(k) + b":" + msgspec.json.encode(v) for k, v in offers.items()]


def test_parts_join_into_the_documented_shape() -> None:
    offers = {
        "offer_for_high_loyalty": {
            "attributes": {"status": "high", "n": 3, "x": None, "l": ["a", 1.5]},
            "batch_segments": [{"id": "1588214"}],
        },
        'quote"d': {"attributes": {}, "batch_segments": []},
    }
    assert join(parts(offers)) == msgspec.json.encode({"offers": offers})
    assert join([]) == EMPTY == msgspec.json.encode({"offers": {}})


def test_the_last_sections_give_way_to_the_size_bound() -> None:
    big = "x" * 3000
    offers = {f"s{i}": {"attributes": {"text": big}, "batch_segments": []} for i in range(5)}
    body = answer(dict(offers))
    assert len(body) <= MAX_RESPONSE_BYTES
    kept = msgspec.json.decode(body)["offers"]
    assert list(kept) == ["s0", "s1", "s2"]
    assert body == msgspec.json.encode({"offers": {k: offers[k] for k in kept}})

    # Exactly at the bound: nothing is dropped.
    def one(text: str) -> dict[str, Any]:
        return {"a": {"attributes": {"t": text}, "batch_segments": []}}

    fits = one("y" * (MAX_RESPONSE_BYTES - len(msgspec.json.encode({"offers": one("")}))))
    assert len(join(parts(fits))) == MAX_RESPONSE_BYTES
    assert msgspec.json.decode(join(parts(fits)))["offers"] == fits
