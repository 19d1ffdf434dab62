"""JSON routes for the audit trail: the admin's search and a patient's own accesses."""

from __future__ import annotations

from fastapi import APIRouter, Query

from clinic.accounts.deps import CurrentActor
from clinic.audit import service
from clinic.audit.schemas import AuditRecordPublic
from clinic.core.validation import Id, Instant, Text
from clinic.web.deps import Session
from clinic.web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=ERROR_RESPONSES)


def record_public(e: service.AuditEntry) -> AuditRecordPublic:
    r = e.record
    return AuditRecordPublic(
        id=r.id,
        at=r.at,
        summary=e.words,
        actor_id=r.actor_id,
        actor_role=r.actor_role,
        actor_name=e.actor.name,
        patient_id=r.patient_id,
        patient_name=None if e.patient is None else e.patient.name,
        action=r.action,
        subject=r.subject,
        address=r.address,
        request_id=r.request_id,
    )


@router.get("/audit")
async def search(
    actor: CurrentActor,
    session: Session,
    patient_id: Id | None = Query(default=None),
    actor_id: Id | None = Query(default=None),
    patient_name: Text | None = Query(default=None, max_length=service.NAME_MAX),
    staff_name: Text | None = Query(default=None, max_length=service.NAME_MAX),
    since: Instant | None = Query(default=None),
    until: Instant | None = Query(default=None),
    limit: int = Query(default=200, ge=1, le=1000),
) -> list[AuditRecordPublic]:
    """Search the trail (admins): newest first. Names match any part, in any case."""
    entries = await service.search(
        session=session,
        actor=actor,
        filters=service.AuditFilter(
            patient_id=patient_id,
            actor_id=actor_id,
            patient_name=patient_name,
            staff_name=staff_name,
            since=since,
            until=until,
            limit=limit,
        ),
    )
    return [record_public(e) for e in entries]


@router.get("/me/audit")
async def mine(
    actor: CurrentActor, session: Session, limit: int = Query(default=200, ge=1, le=1000)
) -> list[AuditRecordPublic]:
    """Who accessed my record, and when (patients)."""
    entries = await service.accesses_to_me(session=session, actor=actor, limit=limit)
    return [record_public(e) for e in entries]
