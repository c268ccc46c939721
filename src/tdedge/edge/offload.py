"""Work too long for the event loop, on a few threads of the worker's own.

Inflating a large gzip body or measuring a deeply nested one takes milliseconds to tens
of milliseconds; on the event loop every request in flight would wait for it. zlib and
numpy release the GIL while they work, so on these threads it also runs beside the loop.
The threads are few and not shared with anything else: a flood of such bodies queues
here, while the loop keeps answering other requests (and ``asyncio.to_thread``'s pool
stays free for the REST API and metrics).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREADS = 2
# Request bodies up to this size are parsed on the event loop (well under a millisecond);
# larger ones here, as measuring how deep a nested megabyte goes takes longer.
INLINE_PARSE_BYTES = 64 * 1024


class Offload:
    def __init__(self, threads: int = THREADS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tdedge-offload")

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on one of the threads, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
