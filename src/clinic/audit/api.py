"""JSON routes for the audit trail: the admin's search and a patient's own accesses."""

from __future__ import annotations

from fastapi import APIRouter, Query

from clinic.accounts.deps import CurrentActor
from clinic.audit import service
from clinic.audit.schemas import AuditRecordPublic
from clinic.core.audit import AuditRecord
from clinic.core.validation import Id, Instant
from clinic.web.deps import Session
from clinic.web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=ERROR_RESPONSES)


def record_public(r: AuditRecord, names: dict[int, str]) -> AuditRecordPublic:
    return AuditRecordPublic(
        id=r.id,
        at=r.at,
        actor_id=r.actor_id,
        actor_role=r.actor_role,
        actor_name=names.get(r.actor_id) if r.actor_id is not None else None,
        patient_id=r.patient_id,
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
    since: Instant | None = Query(default=None),
    until: Instant | None = Query(default=None),
    limit: int = Query(default=200, ge=1, le=1000),
) -> list[AuditRecordPublic]:
    """Search the trail (admins): newest first."""
    records = await service.search(
        session=session,
        actor=actor,
        filters=service.AuditFilter(
            patient_id=patient_id, actor_id=actor_id, since=since, until=until, limit=limit
        ),
    )
    names = await service.actor_names(session=session, ids=(r.actor_id for r in records))
    return [record_public(r, names) for r in records]


@router.get("/me/audit")
async def mine(
    actor: CurrentActor, session: Session, limit: int = Query(default=200, ge=1, le=1000)
) -> list[AuditRecordPublic]:
    """Who accessed my record, and when (patients)."""
    records = await service.accesses_to_me(session=session, actor=actor, limit=limit)
    names = await service.actor_names(session=session, ids=(r.actor_id for r in records))
    return [record_public(r, names) for r in records]
