"""JSON routes for doctors, schedules and free slots."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from clinic.accounts.deps import CurrentActor
from clinic.accounts.schemas import DoctorPublic
from clinic.core.db import utcnow
from clinic.core.validation import Id, Instant, Text
from clinic.scheduling import service, specialty_routes
from clinic.scheduling.booked import Booked
from clinic.scheduling.schemas import (
    OutsideAppointment,
    OverrideIn,
    OverridePublic,
    ScheduleIn,
    SchedulePublic,
    ScheduleSaved,
    SlotPublic,
    SlotsPublic,
)
from clinic.web.deps import Session, SettingsDep
from clinic.web.errors import ERROR_RESPONSES

doctors = APIRouter(prefix="/api/v1/doctors", tags=["doctors"], responses=ERROR_RESPONSES)


def doctor_public(cal: service.DoctorCalendar, next_free: datetime | None) -> DoctorPublic:
    return DoctorPublic(
        id=cal.user.id,
        name=cal.user.name,
        specialty=cal.doctor.specialty,
        bio=cal.doctor.bio,
        time_zone=cal.user.time_zone,
        approved=cal.doctor.approved_at is not None,
        next_free_slot=next_free,
    )


def schedule_public(cal: service.DoctorCalendar) -> SchedulePublic:
    return SchedulePublic(
        doctor_id=cal.user.id,
        time_zone=cal.user.time_zone,
        weekly=service.weekly_in(cal),
        rules=service.rules_in(cal),
        overrides=[
            OverridePublic.model_validate(
                {"id": o.id, "day": o.day, "kind": o.kind, "start": o.start_time, "end": o.end_time}
            )
            for o in cal.overrides
        ],
    )


def outside(appointments: list[Booked]) -> list[OutsideAppointment]:
    return [
        OutsideAppointment(id=a.id, starts_at=a.starts_at, ends_at=a.ends_at) for a in appointments
    ]


@doctors.get("")
async def search(
    actor: CurrentActor,
    session: Session,
    specialty: Text | None = Query(default=None, max_length=100),
    name: Text | None = Query(default=None, max_length=200),
) -> list[DoctorPublic]:
    """Bookable doctors by specialty and name, each with their next free slot (next 14 days)."""
    found = await service.search_doctors(
        session=session, actor=actor, specialty=specialty, name=name, now=utcnow()
    )
    return [doctor_public(cal, nxt) for cal, nxt in found]


@doctors.get("/{doctor_id}/slots")
async def slots(
    doctor_id: Id,
    actor: CurrentActor,
    session: Session,
    settings: SettingsDep,
    start: Annotated[Instant, Query(description="inclusive, ISO 8601 with offset")],
    end: Annotated[Instant, Query(description="exclusive; at most 62 days after start")],
) -> SlotsPublic:
    """Free slots in [start, end) as UTC instants plus the doctor's local time."""
    cal, free = await service.doctor_slots(
        session=session,
        actor=actor,
        doctor_id=doctor_id,
        start=start,
        end=end,
        now=utcnow(),
        max_days=settings.max_slot_range_days,
    )
    return SlotsPublic(
        doctor_id=doctor_id,
        time_zone=cal.user.time_zone,
        start=start,
        end=end,
        slots=[
            SlotPublic(starts_at=s.starts_at, ends_at=s.ends_at, doctor_local=s.local_start)
            for s in free
        ],
    )


@doctors.get("/{doctor_id}/schedule")
async def get_schedule(doctor_id: Id, actor: CurrentActor, session: Session) -> SchedulePublic:
    cal = await service.get_schedule(session=session, actor=actor, doctor_id=doctor_id)
    return schedule_public(cal)


@doctors.put("/{doctor_id}/schedule")
async def put_schedule(
    doctor_id: Id, data: ScheduleIn, actor: CurrentActor, session: Session
) -> ScheduleSaved:
    """Replace weekly hours and slot rules. Booked appointments are never cancelled; those now
    outside the hours are listed in ``outside_hours``."""
    cal, out = await service.save_schedule(
        session=session, actor=actor, doctor_id=doctor_id, data=data, now=utcnow()
    )
    return ScheduleSaved(**schedule_public(cal).model_dump(), outside_hours=outside(out))


@doctors.post("/{doctor_id}/overrides", status_code=status.HTTP_201_CREATED)
async def add_override(
    doctor_id: Id, data: OverrideIn, actor: CurrentActor, session: Session
) -> dict[str, object]:
    override, out = await service.add_override(
        session=session, actor=actor, doctor_id=doctor_id, data=data, now=utcnow()
    )
    return {"id": override.id, "outside_hours": outside(out)}


@doctors.delete("/{doctor_id}/overrides/{override_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_override(
    doctor_id: Id, override_id: Id, actor: CurrentActor, session: Session
) -> None:
    await service.delete_override(
        session=session, actor=actor, doctor_id=doctor_id, override_id=override_id
    )


router = APIRouter()
router.include_router(doctors)
router.include_router(specialty_routes.api)
