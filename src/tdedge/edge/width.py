"""The doors' side of ``max_table_columns``: a record that alone needs more columns than
a table may hold is refused at once, with a reason, instead of being accepted and then
refused by the loader (loader/limits.py says why there is a limit)."""

from __future__ import annotations

from tdedge.config import Settings
from tdedge.edge.http import HTTPError
from tdedge.loader.limits import TOO_MANY_COLUMNS, columns_refusal


def check_width(record: bytes, settings: Settings) -> None:
    """400 ``too_many_columns`` for a record (JSON object text) too wide for any table."""
    refusal = columns_refusal(record, settings.max_table_columns)
    if refusal is not None:
        raise HTTPError(400, TOO_MANY_COLUMNS, refusal, body=record)
