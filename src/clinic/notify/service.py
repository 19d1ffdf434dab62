"""Notification use cases: emails enqueued with the change that causes them, and what admins
read (the outbox, failed jobs).

Called by ``clinic.appointments.service`` inside its own transaction::

    await notify.appointment_changed(session, appointment=appt, change="booked")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import User
from clinic.appointments.models import Appointment
from clinic.core.db import utcnow
from clinic.notify import jobs
from clinic.notify.mail import AppointmentFacts, Change, Party, Role
from clinic.notify.models import OutboxMessage


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


async def appointment_changed(
    session: AsyncSession,
    *,
    appointment: Appointment,
    change: Change,
    previous_start: datetime | None = None,
) -> list[int]:
    """Enqueue the emails to the patient and the doctor about ``change``, in the caller's
    transaction (flush the appointment first). Returns the job ids."""
    await session.flush()
    facts, smoke = await appointment_facts(session, appointment)
    if smoke:
        return []
    stamp = utcnow().isoformat()
    roles: tuple[Role, ...] = ("patient", "doctor")
    return [
        await jobs.enqueue(
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
        for role in roles
    ]


async def outbox(
    *, session: AsyncSession, actor: Actor | None, limit: int = 200
) -> list[OutboxMessage]:
    """The newest messages kept instead of sent (admins only)."""
    guards.require_admin(actor)
    async with session.begin():
        return list(
            await session.scalars(
                select(OutboxMessage)
                .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
                .limit(limit)
            )
        )


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    task_name: str
    status: str
    attempts: int
    queue_name: str
    args: dict[str, Any]
    last_event_at: datetime | None


async def jobs_by_status(
    *, session: AsyncSession, actor: Actor | None, status: str = "failed", limit: int = 200
) -> list[JobRow]:
    """Jobs in ``status`` (default: failed, kept after their last retry), admins only."""
    guards.require_admin(actor)
    if status not in ("todo", "doing", "succeeded", "failed", "cancelled", "aborted"):
        status = "failed"
    async with session.begin():
        rows = await session.execute(
            text(
                "SELECT j.id, j.task_name, j.status::text AS status, j.attempts, j.queue_name,"
                " j.args, (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id)"
                " AS last_event_at FROM procrastinate_jobs j"
                " WHERE j.status = CAST(:status AS procrastinate_job_status)"
                " ORDER BY j.id DESC LIMIT :limit"
            ),
            {"status": status, "limit": limit},
        )
        return [JobRow(**dict(r._mapping)) for r in rows]
