"""What both journals do for the appends waiting on a group: answer them once the group
is durable (or failed), and tell how much disk is left before appends are refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tdedge.errors import JournalUnavailable


def settle(futs: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Resolve the appends waiting on one group; called on their event loop. An error
    reaches them as JournalUnavailable, which the doors turn into a 503."""
    for fut in futs:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(
                error
                if isinstance(error, JournalUnavailable)
                else JournalUnavailable(f"journal write failed: {error}")
            )


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
