"""What admins read about notifications: the outbox and the jobs by status.

The emails themselves are deferred by the feature that changes something, in its own
transaction (``clinic.appointments.notices``), and sent by this feature's worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.notify.models import OutboxMessage


async def outbox(
    *, session: AsyncSession, actor: Actor | None, limit: int = 200
) -> list[OutboxMessage]:
    """The newest messages kept instead of sent (admins only)."""
    guards.require_admin(actor)
    async with session.begin():
        return list(
            await session.scalars(
                select(OutboxMessage)
                .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
                .limit(limit)
            )
        )


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    task_name: str
    status: str
    attempts: int
    queue_name: str
    args: dict[str, Any]
    last_event_at: datetime | None


async def jobs_by_status(
    *, session: AsyncSession, actor: Actor | None, status: str = "failed", limit: int = 200
) -> list[JobRow]:
    """Jobs in ``status`` (default: failed, kept after their last retry), admins only."""
    guards.require_admin(actor)
    if status not in ("todo", "doing", "succeeded", "failed", "cancelled", "aborted"):
        status = "failed"
    async with session.begin():
        rows = await session.execute(
            text(
                "SELECT j.id, j.task_name, j.status::text AS status, j.attempts, j.queue_name,"
                " j.args, (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id)"
                " AS last_event_at FROM procrastinate_jobs j"
                " WHERE j.status = CAST(:status AS procrastinate_job_status)"
                " ORDER BY j.id DESC LIMIT :limit"
            ),
            {"status": status, "limit": limit},
        )
        return [JobRow(**dict(r._mapping)) for r in rows]
