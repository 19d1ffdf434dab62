"""Booking use cases. The database's exclusion constraints are the no-overlap guarantee; the
code checks the slot first only to give a clear answer, and maps a constraint violation to 409."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import Doctor, Role, User
from clinic.appointments import notices
from clinic.appointments.models import Appointment, AppointmentEvent, IdempotencyKey, Status
from clinic.core import audit
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.core.errors import (
    IdempotencyKeyReused,
    InvalidInput,
    InvalidState,
    NotFound,
    PatientBusy,
    SlotTaken,
    SlotUnavailable,
    TooLate,
)
from clinic.core.transaction import in_one_transaction
from clinic.scheduling import service as scheduling

_DoctorUser = aliased(User)
_PatientUser = aliased(User)


@dataclass(frozen=True, slots=True)
class AppointmentView:
    appointment: Appointment
    doctor_name: str
    patient_name: str
    doctor_time_zone: str
    patient_time_zone: str


def _views() -> Select[Appointment, str, str, str, str]:
    return (
        select(
            Appointment,
            _DoctorUser.name,
            _PatientUser.name,
            _DoctorUser.time_zone,
            _PatientUser.time_zone,
        )
        .join(_DoctorUser, _DoctorUser.id == Appointment.doctor_id)
        .join(_PatientUser, _PatientUser.id == Appointment.patient_id)
    )


def _view(row: Row[Appointment, str, str, str, str]) -> AppointmentView:
    appointment, doctor_name, patient_name, doctor_tz, patient_tz = row
    return AppointmentView(appointment, doctor_name, patient_name, doctor_tz, patient_tz)


def _request_hash(doctor_id: int, starts_at: datetime, reason: str) -> str:
    body = json.dumps(
        {"doctor_id": doctor_id, "starts_at": starts_at.isoformat(), "reason": reason},
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _conflict(exc: IntegrityError) -> Exception:
    text = str(exc.orig)
    if "appointments_doctor_no_overlap" in text:
        return _just_taken()
    if "appointments_patient_no_overlap" in text:
        return PatientBusy("You already have an appointment at this time.", field="starts_at")
    return exc


@dataclass(frozen=True, slots=True)
class _Booking:
    """One booking request, as the transaction that serves it needs it."""

    patient: Actor
    doctor_id: int
    starts_at: datetime
    reason: str
    idempotency_key: str | None

    @property
    def request_hash(self) -> str:
        return _request_hash(self.doctor_id, self.starts_at, self.reason)


async def _view_of(session: AsyncSession, appointment_id: int) -> AppointmentView:
    return _view((await session.execute(_views().where(Appointment.id == appointment_id))).one())


async def _replay(session: AsyncSession, booking: _Booking) -> AppointmentView | None:
    """The appointment an earlier request with this booking's Idempotency-Key made (None if
    there is none), read in the caller's transaction. The same key with another body is
    refused."""
    if not booking.idempotency_key:
        return None
    patient = booking.patient
    existing = await session.get(IdempotencyKey, (patient.user_id, booking.idempotency_key))
    if existing is None:
        return None
    if existing.request_hash != booking.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different booking request."
        )
    view = await _view_of(session, existing.appointment_id)
    await _audit(session, patient, view.appointment, "read")
    return view


async def _audit(
    session: AsyncSession, who: Actor, appt: Appointment, action: audit.Action
) -> None:
    """Reading or changing an appointment is reading or changing its patient's data."""
    await audit.record(
        session,
        actor=who,
        patient_id=appt.patient_id,
        action=action,
        subject=f"appointment:{appt.id}",
    )


async def _ensure_free(
    session: AsyncSession,
    calendar: scheduling.DoctorCalendar,
    starts_at: datetime,
    now: datetime,
    *,
    moving: int | None = None,
) -> None:
    """Refuses a time that is taken or not bookable (``moving``: the appointment being moved,
    whose own time does not count as taken)."""
    verdict = await scheduling.slot_verdict(
        session=session, calendar=calendar, starts_at=starts_at, now=now, ignore_appointment=moving
    )
    if verdict is scheduling.SlotCheck.TAKEN:
        raise SlotTaken(
            "This slot is already booked. Please choose another slot.", field="starts_at"
        )
    if verdict is scheduling.SlotCheck.NOT_BOOKABLE:
        raise SlotUnavailable(
            "This is not a bookable time: outside the doctor's hours, too soon, too far ahead "
            "or not on the slot grid.",
            field="starts_at",
        )


def _just_taken() -> SlotTaken:
    return SlotTaken(
        "This time was just booked by someone else. Please choose another slot.",
        field="starts_at",
    )


def _changed_meanwhile() -> InvalidState:
    return InvalidState("This appointment changed meanwhile; reload and try again.")


def _place(appt: Appointment, calendar: scheduling.DoctorCalendar, starts_at: datetime) -> None:
    """Put the appointment at ``starts_at`` with the doctor's slot length and buffer."""
    length = timedelta(minutes=calendar.doctor.slot_minutes)
    appt.starts_at = starts_at
    appt.ends_at = starts_at + length
    appt.buffer_ends_at = appt.ends_at + timedelta(minutes=calendar.doctor.buffer_minutes)


async def book_appointment(
    *,
    session: AsyncSession,
    actor: Actor | None,
    doctor_id: int,
    starts_at: datetime,
    reason: str,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> tuple[AppointmentView, bool]:
    """Book a free slot for the acting patient, in one transaction. Returns the appointment
    and whether it was created now (False: a retry with the same ``Idempotency-Key`` got the
    earlier one)."""
    patient = guards.require_verified_patient(actor)
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key must be 1 to 200 characters.")
    booking = _Booking(patient, doctor_id, starts_at, reason, idempotency_key)
    at = now or utcnow()
    return await in_one_transaction(
        session, lambda: _book(session, booking, at), contention=_just_taken
    )


async def _book(
    session: AsyncSession, booking: _Booking, now: datetime
) -> tuple[AppointmentView, bool]:
    if (replay := await _replay(session, booking)) is not None:
        return replay, False
    calendar = await scheduling.visible_calendar(
        session=session,
        actor=booking.patient,
        doctor_id=booking.doctor_id,
        starts_at=booking.starts_at,
    )
    await _ensure_free(session, calendar, booking.starts_at, now)
    try:
        # A savepoint, not a transaction: a conflict leaves this transaction usable.
        async with session.begin_nested():
            appointment = await _insert_booking(session, booking, calendar)
    except IntegrityError as exc:
        # A concurrent request with the same key may have won: answer with its appointment.
        if (replay := await _replay(session, booking)) is not None:
            return replay, False
        raise _conflict(exc) from exc
    # The confirmation emails and the audit record commit with the booking, or none does.
    await notices.tell_parties(session, appointment=appointment, change="booked")
    await _audit(session, booking.patient, appointment, "create")
    return await _view_of(session, appointment.id), True


async def _insert_booking(
    session: AsyncSession, booking: _Booking, calendar: scheduling.DoctorCalendar
) -> Appointment:
    """The appointment row, its first history event and its idempotency key."""
    patient_id = booking.patient.user_id
    appointment = Appointment(
        doctor_id=booking.doctor_id,
        patient_id=patient_id,
        status=Status.BOOKED.value,
        reason=booking.reason,
    )
    _place(appointment, calendar, booking.starts_at)
    session.add(appointment)
    await session.flush()
    session.add(
        AppointmentEvent(
            appointment_id=appointment.id,
            kind="booked",
            actor_id=patient_id,
            details={"starts_at": booking.starts_at.isoformat()},
        )
    )
    if booking.idempotency_key:
        session.add(
            IdempotencyKey(
                user_id=patient_id,
                key=booking.idempotency_key,
                request_hash=booking.request_hash,
                appointment_id=appointment.id,
            )
        )
    await session.flush()
    return appointment


async def _load_for_update(
    session: AsyncSession, actor: Actor | None, appointment_id: int
) -> tuple[Actor, Appointment]:
    """The appointment, locked (the first lock a change to it takes), if the actor may see
    it."""
    appointment = await session.get(
        Appointment, appointment_id, with_for_update=True, populate_existing=True
    )
    if appointment is None:
        raise NotFound("No such appointment.")
    who = guards.ensure_may_see_appointment(
        actor, patient_id=appointment.patient_id, doctor_id=appointment.doctor_id
    )
    return who, appointment


def too_late_for_patient(
    appointment: Appointment, actor: Actor, settings: Settings, now: datetime
) -> bool:
    """Whether a patient may no longer cancel or move ``appointment`` online: it starts within
    the cut-off (doctors and admins may, any time)."""
    return (
        actor.role is Role.PATIENT and appointment.starts_at - now < settings.patient_cancel_cutoff
    )


def _ensure_booked(appt: Appointment) -> None:
    if appt.status != Status.BOOKED.value:
        raise InvalidState(f"This appointment is {appt.status.replace('_', ' ')}.")


async def get_appointment(
    *, session: AsyncSession, actor: Actor | None, appointment_id: int
) -> tuple[AppointmentView, list[AppointmentEvent]]:
    """The appointment and its history."""
    async with session.begin():
        row = (await session.execute(_views().where(Appointment.id == appointment_id))).first()
        if row is None:
            raise NotFound("No such appointment.")
        view = _view(row)
        who = guards.ensure_may_see_appointment(
            actor, patient_id=view.appointment.patient_id, doctor_id=view.appointment.doctor_id
        )
        events = await session.scalars(
            select(AppointmentEvent)
            .where(AppointmentEvent.appointment_id == appointment_id)
            .order_by(AppointmentEvent.at, AppointmentEvent.id)
        )
        await _audit(session, who, view.appointment, "read")
        return view, list(events)


async def cancel_appointment(
    *,
    session: AsyncSession,
    actor: Actor | None,
    appointment_id: int,
    reason: str | None,
    settings: Settings,
    now: datetime | None = None,
) -> AppointmentView:
    """A patient cancels up to the cut-off before the start; a doctor (or admin) any time,
    with a reason. One transaction."""
    at = now or utcnow()

    async def cancel() -> AppointmentView:
        who, appt = await _load_for_update(session, actor, appointment_id)
        _ensure_booked(appt)
        if too_late_for_patient(appt, who, settings, at):
            hours = settings.patient_cancel_cutoff.total_seconds() / 3600
            raise TooLate(
                f"Appointments can be cancelled online up to {hours:g} hours before they "
                "start. Please contact the clinic."
            )
        if who.role is not Role.PATIENT and not reason:
            raise InvalidInput("Give a reason for the patient.", field="reason")
        appt.status = Status.CANCELLED.value
        appt.cancel_reason = reason
        appt.sequence += 1
        appt.updated_at = at
        session.add(
            AppointmentEvent(
                appointment_id=appt.id,
                kind="cancelled",
                actor_id=who.user_id,
                details={"reason": reason, "by": who.role.value},
            )
        )
        await notices.tell_parties(session, appointment=appt, change="cancelled")
        await _audit(session, who, appt, "update")
        return await _view_of(session, appointment_id)

    return await in_one_transaction(session, cancel, contention=_changed_meanwhile)


async def reschedule_appointment(
    *,
    session: AsyncSession,
    actor: Actor | None,
    appointment_id: int,
    starts_at: datetime,
    settings: Settings,
    now: datetime | None = None,
) -> AppointmentView:
    """Move an appointment to another free slot of the same doctor, in one transaction: if the
    new slot cannot be taken the old appointment stays as it was."""
    at = now or utcnow()

    async def reschedule() -> AppointmentView:
        who, appt = await _load_for_update(session, actor, appointment_id)
        _ensure_booked(appt)
        if too_late_for_patient(appt, who, settings, at):
            raise TooLate("It is too late to move this appointment online. Contact the clinic.")
        calendar = await scheduling.doctor_calendar(
            session=session, doctor_id=appt.doctor_id, starts_at=starts_at
        )
        await _ensure_free(session, calendar, starts_at, at, moving=appointment_id)
        old_start = appt.starts_at
        _place(appt, calendar, starts_at)
        appt.sequence += 1
        appt.updated_at = at
        session.add(
            AppointmentEvent(
                appointment_id=appt.id,
                kind="rescheduled",
                actor_id=who.user_id,
                details={"from": old_start.isoformat(), "to": starts_at.isoformat()},
            )
        )
        try:
            await session.flush()
        except IntegrityError as exc:
            raise _conflict(exc) from exc
        await notices.tell_parties(
            session, appointment=appt, change="rescheduled", previous_start=old_start
        )
        await _audit(session, who, appt, "update")
        return await _view_of(session, appointment_id)

    return await in_one_transaction(session, reschedule, contention=_just_taken)


async def mark_appointment(
    *,
    session: AsyncSession,
    actor: Actor | None,
    appointment_id: int,
    status: Status,
    now: datetime | None = None,
) -> AppointmentView:
    """The doctor marks a started appointment completed or a no-show."""
    now = now or utcnow()
    guards.require_role(actor, Role.DOCTOR, Role.ADMIN)
    async with session.begin():
        who, appt = await _load_for_update(session, actor, appointment_id)
        _ensure_booked(appt)
        if appt.starts_at > now:
            raise InvalidState("An appointment can be marked only once it has started.")
        appt.status = status.value
        appt.sequence += 1
        appt.updated_at = now
        session.add(
            AppointmentEvent(appointment_id=appt.id, kind=status.value, actor_id=who.user_id)
        )
        await _audit(session, who, appt, "update")
        return await _view_of(session, appointment_id)


async def list_appointments(
    *,
    session: AsyncSession,
    actor: Actor | None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
) -> list[AppointmentView]:
    """The actor's appointments: a patient's own, a doctor's agenda, everything for an admin."""
    actor = guards.authenticated(actor)
    stmt = _views()
    if actor.role is Role.PATIENT:
        stmt = stmt.where(Appointment.patient_id == actor.user_id)
    elif actor.role is Role.DOCTOR:
        stmt = stmt.where(Appointment.doctor_id == actor.user_id)
    elif not actor.is_smoke:  # an admin's list leaves out the smoke tests' appointments
        stmt = stmt.where(_DoctorUser.is_smoke.is_(False), _PatientUser.is_smoke.is_(False))
    if start is not None:
        stmt = stmt.where(Appointment.ends_at > start)
    if end is not None:
        stmt = stmt.where(Appointment.starts_at < end)
    stmt = stmt.order_by(Appointment.starts_at).limit(limit)
    async with session.begin():
        views = [_view(row) for row in (await session.execute(stmt)).all()]
        # One record per patient whose appointments were shown (not one per row: an agenda
        # of 50 slots is one look at each patient's appointments).
        patients = sorted({v.appointment.patient_id for v in views})
        await audit.record_many(
            session,
            actor=actor,
            accesses=[audit.Access(pid, "read", "appointments") for pid in patients],
        )
        return views


async def doctor_exists(session: AsyncSession, doctor_id: int) -> bool:
    return await session.get(Doctor, doctor_id) is not None
