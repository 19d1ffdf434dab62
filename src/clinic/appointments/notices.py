"""What a change to an appointment tells its patient and doctor: the facts an email states,
and the email jobs deferred in the change's own transaction (``clinic.core.jobs``).

``clinic.notify`` composes and sends the emails (it registers the ``send_email`` task); this
module only says what happened. The facts are taken inside the transaction of the change, so
an email states the appointment as that change left it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts.models import User
from clinic.appointments.models import Appointment
from clinic.core import jobs
from clinic.core.db import utcnow

Change = Literal["booked", "rescheduled", "cancelled"]
Recipient = Literal["patient", "doctor"]


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    email: str
    time_zone: str


@dataclass(frozen=True, slots=True)
class AppointmentFacts:
    """What an email says about an appointment, taken in the transaction of the change."""

    id: int
    sequence: int
    starts_at: datetime
    ends_at: datetime
    doctor: Party
    patient: Party


def facts_args(facts: AppointmentFacts) -> dict[str, Any]:
    out = asdict(facts)
    out["starts_at"] = facts.starts_at.astimezone(UTC).isoformat()
    out["ends_at"] = facts.ends_at.astimezone(UTC).isoformat()
    return out


def facts_from_args(args: dict[str, Any]) -> AppointmentFacts:
    return AppointmentFacts(
        id=int(args["id"]),
        sequence=int(args["sequence"]),
        starts_at=datetime.fromisoformat(args["starts_at"]),
        ends_at=datetime.fromisoformat(args["ends_at"]),
        doctor=Party(**args["doctor"]),
        patient=Party(**args["patient"]),
    )


async def appointment_facts(
    session: AsyncSession, appointment: Appointment
) -> tuple[AppointmentFacts, bool]:
    """The facts an email states, and whether either party is a synthetic smoke account
    (those get no email: the smoke journey runs against production during every deploy)."""
    users = {
        u.id: u
        for u in await session.scalars(
            select(User).where(User.id.in_([appointment.doctor_id, appointment.patient_id]))
        )
    }
    doctor, patient = users[appointment.doctor_id], users[appointment.patient_id]
    facts = AppointmentFacts(
        id=appointment.id,
        sequence=appointment.sequence,
        starts_at=appointment.starts_at,
        ends_at=appointment.ends_at,
        doctor=Party(doctor.name, doctor.email, doctor.time_zone),
        patient=Party(patient.name, patient.email, patient.time_zone),
    )
    return facts, doctor.is_smoke or patient.is_smoke


async def tell_parties(
    session: AsyncSession,
    *,
    appointment: Appointment,
    change: Change,
    previous_start: datetime | None = None,
) -> list[int]:
    """Defer the emails to the patient and the doctor about ``change``, in the caller's
    transaction (flushes the appointment first). Returns the job ids."""
    await session.flush()
    facts, smoke = await appointment_facts(session, appointment)
    if smoke:
        return []
    stamp = utcnow().isoformat()
    recipients: tuple[Recipient, ...] = ("patient", "doctor")
    return [
        await jobs.defer(
            session,
            jobs.SEND_EMAIL,
            {
                "kind": "appointment",
                "facts": facts_args(facts),
                "change": change,
                "role": role,
                "previous_start": previous_start.isoformat() if previous_start else None,
                "stamp": stamp,
            },
        )
        for role in recipients
    ]
