"""One edge worker, assembled in this process: one control engine and one key cache,
shared by every door, and nothing left open once granian stops it."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import Engine

from tdedge import worker
from tdedge.config import Settings
from tdedge.control.directory import Directory
from tdedge.server import prepare_data_dir

T = TypeVar("T")


def open_files_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            found.append(target)
    return sorted(found)


def alive(kind: type[T]) -> list[T]:
    gc.unfreeze()  # the worker freezes what it built: back where get_objects sees it
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, kind)]


def test_a_worker_opens_one_control_engine_and_one_key_cache_and_closes_all(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    prepare_data_dir(settings)
    before = open_files_under(tmp_path)
    engines_before = {id(e) for e in alive(Engine)}
    directories_before = {id(d) for d in alive(Directory)}
    app = worker.app(settings)
    loop = asyncio.new_event_loop()
    try:
        app.__rsgi_init__(loop)
        services = app._services
        assert services is not None
        # What the p13n and CDP doors open on their first request.
        _ = services.registry, services.profiles, services.batch
        control_db = str(settings.control_db)
        engines = [
            e for e in alive(Engine) if id(e) not in engines_before and e.url.database == control_db
        ]
        assert len(engines) == 1
        assert engines[0] is services.control.engine
        directories = [d for d in alive(Directory) if id(d) not in directories_before]
        assert directories == [services.directory]
        assert open_files_under(tmp_path) != before
        app.__rsgi_del__(loop)
    finally:
        loop.close()
    assert open_files_under(tmp_path) == before
