"""How many connections a worker may hold under the open-files limit (server.py)."""

from __future__ import annotations

import resource

from tdedge.server import FILES_BESIDE_CONNECTIONS, connection_slots


def test_slots_leave_the_worker_its_own_files() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert connection_slots(5) == 5
    if hard != resource.RLIM_INFINITY:
        assert connection_slots(hard) == hard - FILES_BESIDE_CONNECTIONS
    # The soft limit was raised to the hard one: the workers inherit it.
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
