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
        return SlotTaken(
            "This time was just booked by someone else. Please choose another slot.",
            field="starts_at",
        )
    if "appointments_patient_no_overlap" in text:
        return PatientBusy("You already have an appointment at this time.", field="starts_at")
    return exc


async def _replay(
    session: AsyncSession, actor: Actor, key: str, request_hash: str
) -> AppointmentView | None:
    existing = await session.get(IdempotencyKey, (actor.user_id, key))
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different booking request."
        )
    row = (await session.execute(_views().where(Appointment.id == existing.appointment_id))).one()
    view = _view(row)
    await audit.record(
        session,
        actor=actor,
        patient_id=view.appointment.patient_id,
        action="read",
        subject=f"appointment:{view.appointment.id}",
    )
    return view


async def _check_slot(
    session: AsyncSession,
    actor: Actor,
    doctor_id: int,
    starts_at: datetime,
    now: datetime,
    *,
    ignore: int | None = None,
) -> scheduling.DoctorCalendar:
    async with session.begin():
        calendar, verdict = await scheduling.slot_verdict(
            session=session,
            actor=actor,
            doctor_id=doctor_id,
            starts_at=starts_at,
            now=now,
            ignore_appointment=ignore,
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
    return calendar


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
    """Book a free slot for the acting patient. Returns the appointment and whether it was
    created now (False: a retry with the same ``Idempotency-Key`` got the earlier one)."""
    patient = guards.require_patient(actor)
    now = now or utcnow()
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key must be 1 to 200 characters.")
    request_hash = _request_hash(doctor_id, starts_at, reason)
    if idempotency_key:
        async with session.begin():
            replay = await _replay(session, patient, idempotency_key, request_hash)
        if replay is not None:
            return replay, False
    try:
        calendar = await _check_slot(session, patient, doctor_id, starts_at, now)
    except SlotTaken:
        # A retry racing the first request with this key sees the slot taken by the
        # first request's own appointment: answer with that appointment.
        if idempotency_key:
            async with session.begin():
                replay = await _replay(session, patient, idempotency_key, request_hash)
            if replay is not None:
                return replay, False
        raise
    length = timedelta(minutes=calendar.doctor.slot_minutes)
    buffer = timedelta(minutes=calendar.doctor.buffer_minutes)
    try:
        async with session.begin():
            appointment = Appointment(
                doctor_id=doctor_id,
                patient_id=patient.user_id,
                starts_at=starts_at,
                ends_at=starts_at + length,
                buffer_ends_at=starts_at + length + buffer,
                status=Status.BOOKED.value,
                reason=reason,
            )
            session.add(appointment)
            await session.flush()
            session.add(
                AppointmentEvent(
                    appointment_id=appointment.id,
                    kind="booked",
                    actor_id=patient.user_id,
                    details={"starts_at": starts_at.isoformat()},
                )
            )
            if idempotency_key:
                session.add(
                    IdempotencyKey(
                        user_id=patient.user_id,
                        key=idempotency_key,
                        request_hash=request_hash,
                        appointment_id=appointment.id,
                    )
                )
            await session.flush()
            # The confirmation emails and the audit record commit with the booking, or
            # neither does (a conflict above rolls all of it back).
            await notices.tell_parties(session, appointment=appointment, change="booked")
            await audit.record(
                session,
                actor=patient,
                patient_id=patient.user_id,
                action="create",
                subject=f"appointment:{appointment.id}",
            )
            row = (await session.execute(_views().where(Appointment.id == appointment.id))).one()
            view = _view(row)
    except IntegrityError as exc:
        # A concurrent retry with the same key may have won the race: answer with its result.
        if idempotency_key:
            async with session.begin():
                replay = await _replay(session, patient, idempotency_key, request_hash)
            if replay is not None:
                return replay, False
        raise _conflict(exc) from exc
    return view, True


async def _audit_update(session: AsyncSession, who: Actor, appt: Appointment) -> None:
    """A change to an appointment is a change to its patient's data."""
    await audit.record(
        session,
        actor=who,
        patient_id=appt.patient_id,
        action="update",
        subject=f"appointment:{appt.id}",
    )


async def _load_for_update(
    session: AsyncSession, actor: Actor | None, appointment_id: int
) -> tuple[Actor, Appointment]:
    appointment = await session.get(Appointment, appointment_id, with_for_update=True)
    if appointment is None:
        raise NotFound("No such appointment.")
    who = guards.ensure_may_see_appointment(
        actor, patient_id=appointment.patient_id, doctor_id=appointment.doctor_id
    )
    return who, appointment


async def get_appointment(
    *, session: AsyncSession, actor: Actor | None, appointment_id: int
) -> tuple[AppointmentView, list[AppointmentEvent]]:
    return await _get(session, actor, appointment_id, audited=True)


async def _get(
    session: AsyncSession, actor: Actor | None, appointment_id: int, *, audited: bool
) -> tuple[AppointmentView, list[AppointmentEvent]]:
    """The appointment and its history; ``audited=False`` only for the view returned right
    after a change (that change has its own audit record)."""
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
        if audited:
            await audit.record(
                session,
                actor=who,
                patient_id=view.appointment.patient_id,
                action="read",
                subject=f"appointment:{appointment_id}",
            )
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
    with a reason."""
    now = now or utcnow()
    async with session.begin():
        who, appt = await _load_for_update(session, actor, appointment_id)
        if appt.status != Status.BOOKED.value:
            raise InvalidState(f"This appointment is {appt.status.replace('_', ' ')}.")
        if who.role is Role.PATIENT:
            if appt.starts_at - now < settings.patient_cancel_cutoff:
                hours = settings.patient_cancel_cutoff.total_seconds() / 3600
                raise TooLate(
                    f"Appointments can be cancelled online up to {hours:g} hours before they "
                    "start. Please contact the clinic."
                )
        elif not reason:
            raise InvalidInput("Give a reason for the patient.", field="reason")
        appt.status = Status.CANCELLED.value
        appt.cancel_reason = reason
        appt.sequence += 1
        appt.updated_at = now
        session.add(
            AppointmentEvent(
                appointment_id=appt.id,
                kind="cancelled",
                actor_id=who.user_id,
                details={"reason": reason, "by": who.role.value},
            )
        )
        await notices.tell_parties(session, appointment=appt, change="cancelled")
        await _audit_update(session, who, appt)
    view, _ = await _get(session, actor, appointment_id, audited=False)
    return view


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
    now = now or utcnow()
    async with session.begin():
        who, appt = await _load_for_update(session, actor, appointment_id)
        doctor_id, old_start = appt.doctor_id, appt.starts_at
        if appt.status != Status.BOOKED.value:
            raise InvalidState(f"This appointment is {appt.status.replace('_', ' ')}.")
        if who.role is Role.PATIENT and appt.starts_at - now < settings.patient_cancel_cutoff:
            raise TooLate("It is too late to move this appointment online. Contact the clinic.")
    booker = guards.Actor(
        user_id=appt.patient_id, role=Role.PATIENT, name="", email="", time_zone="UTC"
    )
    calendar = await _check_slot(session, booker, doctor_id, starts_at, now, ignore=appointment_id)
    length = timedelta(minutes=calendar.doctor.slot_minutes)
    buffer = timedelta(minutes=calendar.doctor.buffer_minutes)
    try:
        async with session.begin():
            _, appt = await _load_for_update(session, actor, appointment_id)
            if appt.status != Status.BOOKED.value or appt.starts_at != old_start:
                raise InvalidState("This appointment changed meanwhile; reload and try again.")
            appt.starts_at = starts_at
            appt.ends_at = starts_at + length
            appt.buffer_ends_at = starts_at + length + buffer
            appt.sequence += 1
            appt.updated_at = now
            session.add(
                AppointmentEvent(
                    appointment_id=appt.id,
                    kind="rescheduled",
                    actor_id=who.user_id,
                    details={"from": old_start.isoformat(), "to": starts_at.isoformat()},
                )
            )
            await session.flush()
            await notices.tell_parties(
                session, appointment=appt, change="rescheduled", previous_start=old_start
            )
            await _audit_update(session, who, appt)
    except IntegrityError as exc:
        raise _conflict(exc) from exc
    view, _ = await _get(session, actor, appointment_id, audited=False)
    return view


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
        if appt.status != Status.BOOKED.value:
            raise InvalidState(f"This appointment is {appt.status.replace('_', ' ')}.")
        if appt.starts_at > now:
            raise InvalidState("An appointment can be marked only once it has started.")
        appt.status = status.value
        appt.sequence += 1
        appt.updated_at = now
        session.add(
            AppointmentEvent(appointment_id=appt.id, kind=status.value, actor_id=who.user_id)
        )
        await _audit_update(session, who, appt)
    view, _ = await _get(session, actor, appointment_id, audited=False)
    return view


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
