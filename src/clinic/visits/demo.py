"""A demo appointment whose video visit can be joined right away (``make up``).

Booking refuses slots this close (minimum notice), so the demo writes the appointment directly.
Idempotent: nothing is added while the pair already has a joinable appointment.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts.models import User
from clinic.appointments.models import Appointment, AppointmentEvent, Status
from clinic.core.config import Settings
from clinic.core.db import utcnow

DEMO_PATIENT = "maria.rossi@demo.example.org"
DEMO_DOCTOR = "anna.weber@demo.example.org"


async def seed_demo_visit(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    patient_email: str = DEMO_PATIENT,
    doctor_email: str = DEMO_DOCTOR,
) -> int | None:
    """The id of a booked appointment starting in 5 minutes (created if needed), or None
    when the demo accounts do not exist."""
    now = utcnow()
    async with sessions() as session, session.begin():
        rows = await session.execute(
            select(User.email, User.id).where(User.email.in_([patient_email, doctor_email]))
        )
        ids = {email: uid for email, uid in rows.all()}
        if len(ids) != 2:
            return None
        existing = await session.scalar(
            select(Appointment.id).where(
                Appointment.patient_id == ids[patient_email],
                Appointment.doctor_id == ids[doctor_email],
                Appointment.status == Status.BOOKED.value,
                Appointment.starts_at <= now + settings.visit_join_before,
                Appointment.ends_at >= now + timedelta(minutes=20) - settings.visit_join_after,
            )
        )
        if existing is not None:
            return int(existing)
        starts = (now + timedelta(minutes=5)).replace(second=0, microsecond=0)
        appointment = Appointment(
            doctor_id=ids[doctor_email],
            patient_id=ids[patient_email],
            starts_at=starts,
            ends_at=starts + timedelta(minutes=30),
            buffer_ends_at=starts + timedelta(minutes=30),
            status=Status.BOOKED.value,
            reason="Demo video visit",
        )
        session.add(appointment)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            # Someone booked that time with the demo doctor or patient: no demo visit now.
            return None
        session.add(
            AppointmentEvent(
                appointment_id=appointment.id,
                kind="booked",
                actor_id=ids[patient_email],
                details={"demo": True},
            )
        )
        return appointment.id
