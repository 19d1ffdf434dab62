"""HTML pages for appointments: booking, the patient's list, details, the doctor's agenda."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Protocol
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts.deps import PageActor, page_actor_back_to
from clinic.accounts.guards import Actor
from clinic.appointments import service
from clinic.appointments.schemas import AppointmentCreate, AppointmentReschedule
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.core.errors import ClinicError, Conflict, IdempotencyKeyReused, InvalidInput
from clinic.core.provided import Provided
from clinic.core.validation import Id, InstantText, PageDay
from clinic.scheduling import service as scheduling
from clinic.scheduling.pages import local_midnight, monday_of, parse_day
from clinic.web.deps import CsrfChecked, Session, SettingsDep, app_state
from clinic.web.pages import flash, page, redirect, text, validation_errors
from clinic.web.render import viewer_zone

router = APIRouter(include_in_schema=False)

BackToAppointment = Annotated[Actor, page_actor_back_to("/appointments/{appointment_id}")]
BackToBooking = Annotated[
    Actor, page_actor_back_to("/book", form_fields=("doctor_id", "starts_at", "reason"))
]

RESCHEDULE_LOOKAHEAD = timedelta(days=14)
RESCHEDULE_CHOICES = 400


class VisitSummaries(Protocol):
    """The video visit's box on the appointment page (visits sit above appointments)."""

    async def __call__(
        self, *, session: AsyncSession, actor: Actor, appointment_id: int, settings: Settings
    ) -> object | None: ...


VISIT_SUMMARY: Provided[VisitSummaries] = Provided(
    "the appointment page's visit box (clinic.visits.service.visit_summary)"
)


def parse_instant(value: str, name: str = "starts_at") -> datetime:
    """An ISO 8601 instant with its UTC offset."""
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise InvalidInput("Choose a slot from the doctor's calendar.", field=name)
    return instant


# ---------------------------------------------------------------- booking


async def _book_page(
    request: Request,
    session: Session,
    actor: Actor,
    *,
    doctor_id: int,
    starts_at: datetime,
    reason: str = "",
    key: str | None = None,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    calendar, verdict = await scheduling.check_slot(
        session=session, actor=actor, doctor_id=doctor_id, starts_at=starts_at, now=utcnow()
    )
    errors = dict(errors or {})
    if verdict is scheduling.SlotCheck.TAKEN:
        errors.setdefault("starts_at", "This slot is already booked. Please choose another slot.")
    elif verdict is scheduling.SlotCheck.NOT_BOOKABLE:
        errors.setdefault("starts_at", "This time cannot be booked. Please choose another slot.")
    zone = viewer_zone(request)
    week = monday_of(starts_at.astimezone(zone).date())
    return page(
        request,
        "appointments/book.html",
        status_code,
        calendar=calendar,
        doctor_id=doctor_id,
        starts_at=starts_at,
        bookable=verdict is scheduling.SlotCheck.FREE,
        reason=reason,
        idempotency_key=key or str(uuid.uuid4()),
        calendar_url=f"/doctors/{doctor_id}?" + urlencode({"week": week.isoformat()}),
        errors=errors,
    )


@router.get("/book")
async def book_form(
    request: Request,
    actor: PageActor,
    session: Session,
    doctor_id: Annotated[Id, Query()],
    starts_at: Annotated[InstantText, Query(max_length=64)],
) -> Response:
    """The chosen slot in both time zones, and the reason for the visit."""
    return await _book_page(
        request, session, actor, doctor_id=doctor_id, starts_at=parse_instant(starts_at)
    )


@router.post("/book", dependencies=[CsrfChecked])
async def book(request: Request, actor: BackToBooking, session: Session) -> Response:
    """Book the slot; the form's idempotency key makes a double submit book once."""
    form = await request.form()
    fields = {k: text(form, k) for k in ("doctor_id", "starts_at", "reason")}
    key = text(form, "idempotency_key") or None
    try:
        data = AppointmentCreate.model_validate(fields)
    except ValidationError as exc:
        errors = validation_errors(exc)
        if "doctor_id" in errors or "starts_at" in errors:
            raise InvalidInput("Choose a slot from a doctor's calendar.") from None
        if "reason" in errors and not fields["reason"]:
            errors["reason"] = "Tell the doctor briefly why you would like to see them."
        return await _book_page(
            request,
            session,
            actor,
            doctor_id=int(fields["doctor_id"]),
            starts_at=parse_instant(fields["starts_at"]),
            reason=fields["reason"],
            key=key,
            status_code=422,
            errors=errors,
        )
    try:
        view, created = await service.book_appointment(
            session=session,
            actor=actor,
            doctor_id=data.doctor_id,
            starts_at=data.starts_at,
            reason=data.reason,
            idempotency_key=key,
        )
    except ClinicError as exc:
        field = exc.field or ("starts_at" if isinstance(exc, Conflict) else "form")
        return await _book_page(
            request,
            session,
            actor,
            doctor_id=data.doctor_id,
            starts_at=data.starts_at,
            reason=data.reason,
            key=None if isinstance(exc, IdempotencyKeyReused) else key,
            status_code=exc.status,
            errors={field: exc.message},
        )
    flash(
        request,
        "Your appointment is booked." if created else "This appointment was already booked.",
    )
    return redirect(f"/appointments/{view.appointment.id}")


# ---------------------------------------------------------------- lists and details


@router.get("/appointments")
async def appointments(request: Request, actor: PageActor, session: Session) -> Response:
    """Upcoming appointments (booked, not yet over), past ones (newest first) and cancelled
    ones, as three lists."""
    views = await service.list_appointments(session=session, actor=actor)
    now = utcnow()
    upcoming, past, cancelled = [], [], []
    for v in views:
        a = v.appointment
        if a.status == "cancelled":
            cancelled.append(v)
        elif a.status == "booked" and a.ends_at > now:
            upcoming.append(v)
        else:
            past.append(v)
    past.reverse()  # newest first
    cancelled.reverse()
    return page(
        request, "appointments/list.html", upcoming=upcoming, past=past, cancelled=cancelled
    )


def _moved_to(details: dict[str, Any]) -> datetime | None:
    """Where a "rescheduled" event moved the appointment to."""
    try:
        return datetime.fromisoformat(str(details["to"]))
    except (KeyError, ValueError):
        return None


async def _detail_page(
    request: Request,
    session: Session,
    actor: Actor,
    appointment_id: int,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    view, events = await service.get_appointment(
        session=session, actor=actor, appointment_id=appointment_id
    )
    # The visit: a join link inside its window, its notes for the patient and the doctor only.
    summaries = VISIT_SUMMARY.get_or_none()  # None: the visits feature is not installed
    visit = (
        await summaries(
            session=session,
            actor=actor,
            appointment_id=appointment_id,
            settings=app_state(request).settings,
        )
        if summaries is not None
        else None
    )
    choices: dict[date, list[datetime]] = {}
    now = utcnow()
    settings = app_state(request).settings
    too_late = service.too_late_for_patient(view.appointment, actor, settings, now)
    if view.appointment.status == "booked" and not too_late:
        try:
            _, free = await scheduling.doctor_slots(
                session=session,
                actor=actor,
                doctor_id=view.appointment.doctor_id,
                start=now,
                end=now + RESCHEDULE_LOOKAHEAD,
                now=now,
            )
        except ClinicError:
            free = []  # the doctor is no longer bookable: nothing to move to
        zone = viewer_zone(request)
        for slot in free[:RESCHEDULE_CHOICES]:
            choices.setdefault(slot.starts_at.astimezone(zone).date(), []).append(slot.starts_at)
    return page(
        request,
        "appointments/detail.html",
        status_code,
        view=view,
        a=view.appointment,
        history=[(e, _moved_to(e.details)) for e in events],
        choices=list(choices.items()),
        values=values or {},
        errors=errors or {},
        visit=visit,
        too_late=too_late,
        cutoff_hours=settings.patient_cancel_cutoff.total_seconds() / 3600,
        may_download=actor.user_id in (view.appointment.patient_id, view.appointment.doctor_id),
    )


@router.get("/appointments/{appointment_id}")
async def appointment(
    appointment_id: Id, request: Request, actor: PageActor, session: Session
) -> Response:
    """One appointment with its history, and forms to cancel or move it."""
    return await _detail_page(request, session, actor, appointment_id)


async def _cancel_page(
    request: Request,
    session: Session,
    actor: Actor,
    appointment_id: int,
    *,
    reason: str = "",
    status_code: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    """The confirmation step: what is being cancelled, an optional reason, yes or no."""
    view, _ = await service.get_appointment(
        session=session, actor=actor, appointment_id=appointment_id
    )
    settings = app_state(request).settings
    if view.appointment.status != "booked" or service.too_late_for_patient(
        view.appointment, actor, settings, utcnow()
    ):
        return redirect(f"/appointments/{appointment_id}")  # that page says why not
    return page(
        request,
        "appointments/cancel.html",
        status_code,
        view=view,
        a=view.appointment,
        values={"reason": reason},
        errors=errors or {},
    )


@router.get("/appointments/{appointment_id}/cancel")
async def cancel_form(
    appointment_id: Id, request: Request, actor: PageActor, session: Session
) -> Response:
    """Asks before cancelling (works without JavaScript)."""
    return await _cancel_page(request, session, actor, appointment_id)


@router.post("/appointments/{appointment_id}/cancel", dependencies=[CsrfChecked])
async def cancel(
    appointment_id: Id,
    request: Request,
    actor: BackToAppointment,
    session: Session,
    settings: SettingsDep,
) -> Response:
    """Cancels once confirmed; a post without ``confirm=yes`` shows the confirmation step."""
    form = await request.form()
    reason = text(form, "reason")
    if text(form, "confirm") != "yes":
        return await _cancel_page(request, session, actor, appointment_id, reason=reason)
    try:
        await service.cancel_appointment(
            session=session,
            actor=actor,
            appointment_id=appointment_id,
            reason=reason or None,
            settings=settings,
        )
    except ClinicError as exc:
        if exc.field == "reason":
            return await _cancel_page(
                request,
                session,
                actor,
                appointment_id,
                reason=reason,
                status_code=exc.status,
                errors={"reason": exc.message},
            )
        return await _detail_page(
            request,
            session,
            actor,
            appointment_id,
            status_code=exc.status,
            errors={"cancel": exc.message},
        )
    flash(request, "The appointment is cancelled.")
    return redirect(f"/appointments/{appointment_id}")


@router.post("/appointments/{appointment_id}/reschedule", dependencies=[CsrfChecked])
async def reschedule(
    appointment_id: Id,
    request: Request,
    actor: BackToAppointment,
    session: Session,
    settings: SettingsDep,
) -> Response:
    form = await request.form()
    try:
        data = AppointmentReschedule.model_validate({"starts_at": text(form, "starts_at")})
        await service.reschedule_appointment(
            session=session,
            actor=actor,
            appointment_id=appointment_id,
            starts_at=data.starts_at,
            settings=settings,
        )
    except ValidationError:
        errors = {"starts_at": "Choose one of the free times."}
        return await _detail_page(
            request, session, actor, appointment_id, status_code=422, errors=errors
        )
    except ClinicError as exc:
        key = "starts_at" if exc.field or isinstance(exc, Conflict) else "reschedule"
        return await _detail_page(
            request,
            session,
            actor,
            appointment_id,
            status_code=exc.status,
            errors={key: exc.message},
        )
    flash(request, "The appointment is moved.")
    return redirect(f"/appointments/{appointment_id}")


# ---------------------------------------------------------------- the doctor's agenda


@router.get("/agenda")
async def agenda(
    request: Request,
    actor: PageActor,
    session: Session,
    view: str = Query(default="day", pattern="^(day|week)$"),
    on: Annotated[PageDay, Query(alias="date")] = None,
) -> Response:
    """The doctor's appointments of one day or week, in their own time zone."""
    zone = viewer_zone(request)
    today = utcnow().astimezone(zone).date()
    day = parse_day(on, "date", today)
    first = monday_of(day) if view == "week" else day
    length = timedelta(days=7 if view == "week" else 1)
    start, end = local_midnight(first, zone), local_midnight(first + length, zone)
    views = await service.list_appointments(session=session, actor=actor, start=start, end=end)
    days = [first + timedelta(days=i) for i in range(length.days)]
    by_day: dict[date, list[service.AppointmentView]] = {d: [] for d in days}
    for v in views:
        by_day.setdefault(v.appointment.starts_at.astimezone(zone).date(), []).append(v)

    def link(v: str, d: date) -> str:
        return "/agenda?" + urlencode({"view": v, "date": d.isoformat()})

    return page(
        request,
        "appointments/agenda.html",
        view=view,
        first=first,
        days=[(d, by_day[d]) for d in days],
        count=len(views),
        prev_url=link(view, first - length),
        next_url=link(view, first + length),
        today_url=link(view, today),
        day_url=link("day", day),
        week_url=link("week", day),
        day_link=lambda d: link("day", d),
    )
