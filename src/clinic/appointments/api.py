"""JSON routes for appointments."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Response, status

from clinic.accounts.deps import CurrentActor
from clinic.appointments import service
from clinic.appointments.models import AppointmentEvent, Status
from clinic.appointments.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentDetail,
    AppointmentEventPublic,
    AppointmentMark,
    AppointmentPublic,
    AppointmentReschedule,
)
from clinic.core.validation import Id, Instant, Text
from clinic.web.deps import Session, SettingsDep
from clinic.web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/appointments", tags=["appointments"], responses=ERROR_RESPONSES)


def appointment_public(view: service.AppointmentView) -> AppointmentPublic:
    a = view.appointment
    return AppointmentPublic(
        id=a.id,
        doctor_id=a.doctor_id,
        doctor_name=view.doctor_name,
        patient_id=a.patient_id,
        patient_name=view.patient_name,
        starts_at=a.starts_at,
        ends_at=a.ends_at,
        status=a.status,
        reason=a.reason,
        cancel_reason=a.cancel_reason,
        sequence=a.sequence,
        created_at=a.created_at,
        updated_at=a.updated_at,
    )


def event_public(e: AppointmentEvent) -> AppointmentEventPublic:
    return AppointmentEventPublic(kind=e.kind, at=e.at, actor_id=e.actor_id, details=e.details)


@router.post("", status_code=status.HTTP_201_CREATED)
async def book(
    data: AppointmentCreate,
    response: Response,
    actor: CurrentActor,
    session: Session,
    idempotency_key: Text | None = Header(default=None, max_length=200),
) -> AppointmentPublic:
    """Book a free slot. With ``Idempotency-Key`` a retry returns the same appointment (200)."""
    view, created = await service.book_appointment(
        session=session,
        actor=actor,
        doctor_id=data.doctor_id,
        starts_at=data.starts_at,
        reason=data.reason,
        idempotency_key=idempotency_key,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return appointment_public(view)


@router.get("")
async def list_appointments(
    actor: CurrentActor,
    session: Session,
    start: Instant | None = Query(default=None),
    end: Instant | None = Query(default=None),
) -> list[AppointmentPublic]:
    views = await service.list_appointments(session=session, actor=actor, start=start, end=end)
    return [appointment_public(v) for v in views]


@router.get("/{appointment_id}")
async def get(appointment_id: Id, actor: CurrentActor, session: Session) -> AppointmentDetail:
    view, events = await service.get_appointment(
        session=session, actor=actor, appointment_id=appointment_id
    )
    return AppointmentDetail(
        **appointment_public(view).model_dump(), history=[event_public(e) for e in events]
    )


@router.post("/{appointment_id}/cancel")
async def cancel(
    appointment_id: Id,
    data: AppointmentCancel,
    actor: CurrentActor,
    session: Session,
    settings: SettingsDep,
) -> AppointmentPublic:
    view = await service.cancel_appointment(
        session=session,
        actor=actor,
        appointment_id=appointment_id,
        reason=data.reason,
        settings=settings,
    )
    return appointment_public(view)


@router.post("/{appointment_id}/reschedule")
async def reschedule(
    appointment_id: Id,
    data: AppointmentReschedule,
    actor: CurrentActor,
    session: Session,
    settings: SettingsDep,
) -> AppointmentPublic:
    view = await service.reschedule_appointment(
        session=session,
        actor=actor,
        appointment_id=appointment_id,
        starts_at=data.starts_at,
        settings=settings,
    )
    return appointment_public(view)


@router.post("/{appointment_id}/status")
async def mark(
    appointment_id: Id, data: AppointmentMark, actor: CurrentActor, session: Session
) -> AppointmentPublic:
    view = await service.mark_appointment(
        session=session, actor=actor, appointment_id=appointment_id, status=Status(data.status)
    )
    return appointment_public(view)
