"""One edge worker process, assembled: granian's factory for ``serve`` and ``listen``.

The worker's settings come from ``serve`` through the environment. Its shared resources
(journal, control store, key cache, p13n stores) are built once per worker by the edge
(edge/services.py) and closed when granian stops it. The edge's own doors are built by
edge/app.py; the REST API's door sits above the edge, as it reads the lake and the job
store, so it is handed in here: the edge itself never imports the REST API or the lake.
"""

from __future__ import annotations

import os

from tdedge import logs
from tdedge.api.door import ApiDoor
from tdedge.config import SETTINGS_ENV, Settings
from tdedge.edge.app import EdgeApp


def app(settings: Settings) -> EdgeApp:
    return EdgeApp(settings, api_door=ApiDoor)


def create_app() -> EdgeApp:
    """granian's factory (``tdedge.worker:create_app``)."""
    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    logs.configure(settings.log_level)
    return app(settings)
