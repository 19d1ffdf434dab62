"""HTML pages for visits: the video visit itself, and the doctor's note form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from clinic.accounts.deps import PageActor, page_actor_back_to
from clinic.accounts.guards import Actor
from clinic.appointments import service as appointments
from clinic.core.db import utcnow
from clinic.core.errors import ClinicError, NotFound
from clinic.core.validation import Id, PageId
from clinic.visits import service
from clinic.web.deps import CsrfChecked, Session, SettingsDep
from clinic.web.pages import flash, page, raw, redirect

router = APIRouter(include_in_schema=False)

BackToAppointment = Annotated[Actor, page_actor_back_to("/appointments/{appointment_id}")]


@router.get("/visits/{appointment_id}")
async def visit_page(
    appointment_id: Id,
    request: Request,
    actor: PageActor,
    session: Session,
    settings: SettingsDep,
) -> Response:
    """The video visit: inside the join window the call, outside it when it opens and closes."""
    now = utcnow()
    summary = await service.visit_summary(
        session=session, actor=actor, appointment_id=appointment_id, settings=settings, now=now
    )
    if summary is None:
        raise NotFound("No such visit.")
    view, _ = await appointments.get_appointment(
        session=session, actor=actor, appointment_id=appointment_id
    )
    if summary.ended or view.appointment.status != "booked":
        closed = "This visit has ended." if summary.ended else "This appointment is not booked."
    else:
        closed = service.window_message(summary.window, actor.time_zone, now)
    return page(
        request,
        "visits/visit.html",
        summary=summary,
        view=view,
        a=view.appointment,
        closed_message=closed,
    )


@router.get("/device-check")
async def device_check(
    request: Request, appointment: Annotated[PageId, Query()] = None
) -> Response:
    """Camera preview, microphone level and a speaker test, all in the browser (no login:
    nothing is sent anywhere). From the waiting room it links back to the visit."""
    back = f"/visits/{appointment}" if appointment is not None else None
    return page(request, "visits/device_check.html", back=back)


@router.post("/visits/{appointment_id}/note", dependencies=[CsrfChecked])
async def write_note(
    appointment_id: Id, request: Request, actor: BackToAppointment, session: Session
) -> Response:
    """Save the doctor's note; a refused note comes back on its own form with the reason
    next to the field and the text as typed, never dropped without a word."""
    form = await request.form()
    body = raw(form, "note")
    try:
        await service.write_note(
            session=session, actor=actor, appointment_id=appointment_id, body=body
        )
    except ClinicError as exc:
        if isinstance(exc, NotFound):
            raise
        return page(
            request,
            "visits/note.html",
            exc.status,
            appointment_id=appointment_id,
            values={"note": body},
            errors={"note": exc.message},
        )
    flash(request, "The visit note is saved.")
    return redirect(f"/appointments/{appointment_id}#visit-notes")
