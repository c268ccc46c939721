"""A query job as a runner holds it (status running, one attempt): the job tests'
common starting point; each test names only the fields it is about."""

from __future__ import annotations

from typing import Any

from tdedge.control.jobs import Job


def running_job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": 1,
        "account_id": 1,
        "key_id": "k",
        "type": "presto",
        "database": "web",
        "query": "SELECT 1",
        "status": "running",
        "priority": 0,
        "retry_limit": 0,
        "scheduled_time": 0,
        "created_at": 0,
        "updated_at": 0,
        "start_at": None,
        "end_at": None,
        "result_schema": None,
        "num_records": None,
        "result_size": None,
        "error": None,
        "kill_requested": False,
        "attempts": 1,
    }
    return Job(**{**base, **fields})
