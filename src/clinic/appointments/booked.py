"""Booked time as scheduling asks for it (``clinic.scheduling.booked.Bookings``), read from
the appointments' table in the caller's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts.models import User
from clinic.appointments.models import Appointment, Status
from clinic.scheduling.booked import Booked, Interval


class AppointmentBookings:
    """Every appointment that is not cancelled holds its time (and its doctor's buffer)."""

    async def busy(
        self,
        session: AsyncSession,
        *,
        doctor_ids: list[int],
        start: datetime,
        end: datetime,
        ignore: int | None = None,
    ) -> dict[int, list[Interval]]:
        stmt = (
            select(Appointment.doctor_id, Appointment.starts_at, Appointment.buffer_ends_at)
            .where(
                Appointment.doctor_id.in_(doctor_ids),
                Appointment.status != Status.CANCELLED.value,
                Appointment.starts_at < end + timedelta(days=1),
                Appointment.buffer_ends_at > start - timedelta(days=1),
            )
            .order_by(Appointment.starts_at)
        )
        if ignore is not None:
            stmt = stmt.where(Appointment.id != ignore)
        busy: dict[int, list[Interval]] = {i: [] for i in doctor_ids}
        for doctor_id, s, e in (await session.execute(stmt)).all():
            busy[doctor_id].append((s, e))
        return busy

    async def upcoming(
        self, session: AsyncSession, *, doctor_id: int, since: datetime
    ) -> list[Booked]:
        rows = await session.execute(
            select(
                Appointment.id,
                Appointment.patient_id,
                User.name,
                Appointment.starts_at,
                Appointment.ends_at,
            )
            .join(User, User.id == Appointment.patient_id)
            .where(
                Appointment.doctor_id == doctor_id,
                Appointment.status == Status.BOOKED.value,
                Appointment.starts_at >= since,
            )
            .order_by(Appointment.starts_at)
        )
        return [Booked(*row) for row in rows.all()]


BOOKINGS = AppointmentBookings()
