"""What scheduling needs to know about booked time, and who tells it.

Appointments sit above scheduling in the feature stack: booking asks scheduling whether a
slot is free, so scheduling must not read the appointments' table itself. It asks a
:class:`Bookings` instead: ``clinic.appointments.booked.BOOKINGS``, which the composition
root (``clinic.app.create_app``) puts into :data:`SOURCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from clinic.core.provided import Provided

Interval = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Booked:
    """A booked appointment, as the schedule editor shows it."""

    id: int
    patient_id: int
    patient_name: str
    starts_at: datetime
    ends_at: datetime


class Bookings(Protocol):
    """Booked time, read in the caller's transaction."""

    async def busy(
        self,
        session: AsyncSession,
        *,
        doctor_ids: list[int],
        start: datetime,
        end: datetime,
        ignore: int | None = None,
    ) -> dict[int, list[Interval]]:
        """Each doctor's busy intervals (start, end of buffer) touching [start, end), a day
        either side; ``ignore``: an appointment being moved, whose own time is not busy."""
        ...

    async def upcoming(
        self, session: AsyncSession, *, doctor_id: int, since: datetime
    ) -> list[Booked]:
        """The doctor's booked appointments starting at ``since`` or later, by start."""
        ...


SOURCE: Provided[Bookings] = Provided("booked time (clinic.appointments.booked.BOOKINGS)")
