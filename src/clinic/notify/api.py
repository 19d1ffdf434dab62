"""JSON routes for admins: failed jobs and the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from clinic.accounts.deps import CurrentActor
from clinic.core.validation import Text
from clinic.notify import service
from clinic.web.deps import Session
from clinic.web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/admin", tags=["notify"], responses=ERROR_RESPONSES)


class JobPublic(BaseModel):
    id: int
    task_name: str
    status: str
    attempts: int
    queue_name: str
    args: dict[str, Any]
    last_event_at: datetime | None


class OutboxPublic(BaseModel):
    id: int
    created_at: datetime
    recipient: str
    subject: str
    body: str
    ics: str | None


@router.get("/jobs")
async def jobs(
    actor: CurrentActor,
    session: Session,
    status: Annotated[Text, Query(max_length=50)] = "failed",
) -> list[JobPublic]:
    rows = await service.jobs_by_status(session=session, actor=actor, status=status)
    return [JobPublic(**_asdict(r)) for r in rows]


def _asdict(row: service.JobRow) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(row)


@router.get("/outbox")
async def outbox(actor: CurrentActor, session: Session) -> list[OutboxPublic]:
    messages = await service.outbox(session=session, actor=actor)
    return [
        OutboxPublic(
            id=m.id,
            created_at=m.created_at,
            recipient=m.recipient,
            subject=m.subject,
            body=m.body,
            ics=m.ics,
        )
        for m in messages
    ]
