"""Numbers spelled in what clients send: job ids, cursors, key prefixes, decision ids."""

from __future__ import annotations

# Digits that always fit a BIGINT (its largest value has 19).
MAX_DIGITS = 18


def bigint(text: str) -> int | None:
    """The number ``text`` spells in 1 to ``MAX_DIGITS`` ASCII digits; None otherwise.

    ASCII only: str.isdigit() also takes "²" and other digits int() refuses. And the
    length first: int() refuses a string of more than 4,300 digits, and would spend
    time on one that long before saying so.
    """
    if not (0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()):
        return None
    return int(text)
