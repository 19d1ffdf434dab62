"""Admin pages (the outbox: mail kept when no SMTP server is configured; failed jobs), and
an appointment's calendar file for its patient and doctor."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from clinic.accounts.deps import PageActor
from clinic.appointments import notices
from clinic.appointments import service as appointments
from clinic.core.errors import NotFound
from clinic.core.validation import Id
from clinic.notify import service
from clinic.notify.mail import calendar
from clinic.web.deps import Session, SettingsDep
from clinic.web.pages import page

router = APIRouter(include_in_schema=False)


@router.get("/admin/outbox")
async def outbox(request: Request, actor: PageActor, session: Session) -> Response:
    messages = await service.outbox(session=session, actor=actor)
    return page(request, "notify/outbox.html", messages=messages)


@router.get("/admin/jobs")
async def failed_jobs(request: Request, actor: PageActor, session: Session) -> Response:
    status = request.query_params.get("status", "failed")
    rows = await service.jobs_by_status(session=session, actor=actor, status=status)
    return page(request, "notify/jobs.html", jobs=rows, status=status)


@router.get("/appointments/{appointment_id}/calendar.ics")
async def appointment_calendar(
    appointment_id: Id, actor: PageActor, session: Session, settings: SettingsDep
) -> Response:
    """The appointment as an iCalendar file: the same event (UID, SEQUENCE) its emails attach,
    so importing both leaves one entry. Only for the appointment's patient and doctor: anyone
    else (an admin included) gets the same 404 as for an appointment that does not exist."""
    view, _ = await appointments.get_appointment(
        session=session, actor=actor, appointment_id=appointment_id
    )
    a = view.appointment
    if actor.user_id not in (a.patient_id, a.doctor_id):
        raise NotFound("No such appointment.")
    async with session.begin():
        facts, _smoke = await notices.appointment_facts(session, a)
    role: Literal["patient", "doctor"] = "patient" if actor.user_id == a.patient_id else "doctor"
    ics = calendar(
        facts,
        method="CANCEL" if a.status == "cancelled" else "REQUEST",
        role=role,
        mail_from=settings.mail_from,
        stamp=a.updated_at,
    )
    return Response(
        ics,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="appointment-{a.id}.ics"',
            "Cache-Control": "private, no-store",
        },
    )
