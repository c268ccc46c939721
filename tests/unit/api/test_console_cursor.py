"""The console's event cursor: a snapshot number, or a 400 (never a 500)."""

from __future__ import annotations

import pytest

from tdedge.api.console import _cursor
from tdedge.api.wire import ApiError


def test_a_snapshot_number_is_the_cursor() -> None:
    assert _cursor(None) is None
    assert _cursor("") is None
    assert _cursor("42") == 42


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "²", "٣", "9" * 19, "9" * 5000])
def test_anything_else_is_a_400(raw: str) -> None:
    with pytest.raises(ApiError) as refused:
        _cursor(raw)
    assert refused.value.status == 400 and refused.value.code == "invalid_cursor"
    assert len(refused.value.message) < 100
