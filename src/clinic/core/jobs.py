"""Deferring a job inside the caller's own transaction (a transactional outbox).

Any feature defers a job by name with :func:`defer`; ``clinic.notify`` registers the tasks
that run them (``notify/worker.py``). The names below are that contract.

procrastinate's ``defer_async`` uses its own connection, so a job deferred that way could
survive a rolled-back booking (or vanish with a committed one). :func:`defer` instead calls
procrastinate's SQL function ``procrastinate_defer_jobs_v1`` on the SQLAlchemy session's own
connection: the job row commits or rolls back with the change that caused it, and the insert
trigger's NOTIFY wakes the workers only at commit.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

DEFAULT_QUEUE = "default"

SEND_EMAIL = "clinic.notify.send_email"
"""Send one composed email (args: ``clinic.appointments.notices``)."""
TICK = "clinic.notify.tick"
PURGE = "clinic.notify.purge"

_DEFER = text(
    "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW("
    "CAST(:queue AS varchar), CAST(:task AS varchar), CAST(:priority AS integer), "
    "CAST(:lock AS text), CAST(:queueing_lock AS text), CAST(:args AS jsonb), "
    "CAST(:scheduled_at AS timestamptz))]::procrastinate_job_to_defer_v1[]))"
)


async def defer(
    session: AsyncSession,
    task: str,
    args: dict[str, Any],
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    lock: str | None = None,
    queueing_lock: str | None = None,
    scheduled_at: datetime | None = None,
) -> int:
    """Add a job for ``task`` (a procrastinate task name) in the session's open transaction;
    returns the job id. The job runs only if that transaction commits."""
    if not session.in_transaction():
        raise RuntimeError("defer must run inside the transaction of the change it follows")
    job_id = await session.scalar(
        _DEFER,
        {
            "queue": queue,
            "task": task,
            "priority": priority,
            "lock": lock,
            "queueing_lock": queueing_lock,
            "args": json.dumps(args),
            "scheduled_at": scheduled_at,
        },
    )
    assert job_id is not None
    return int(job_id)
