"""Schedule use cases: read and replace a doctor's hours, overrides, free slots, doctor search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import Doctor, Role, User
from clinic.accounts.specialties import Specialty
from clinic.core import audit
from clinic.core.errors import InvalidInput, NotFound
from clinic.scheduling import booked
from clinic.scheduling import slots as slotlib
from clinic.scheduling.booked import Booked
from clinic.scheduling.models import ScheduleOverride, WeeklyHours
from clinic.scheduling.schemas import OverrideIn, RulesIn, ScheduleIn, WeeklyWindowIn

SEARCH_LOOKAHEAD = timedelta(days=14)
"""How far ahead doctor search looks for each doctor's next free slot."""


@dataclass(frozen=True, slots=True)
class DoctorCalendar:
    """Everything the slot computation needs for one doctor."""

    user: User
    doctor: Doctor
    weekly: list[WeeklyHours]
    overrides: list[ScheduleOverride]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.user.time_zone)

    def rules(self) -> slotlib.SlotRules:
        d = self.doctor
        return slotlib.SlotRules(
            time_zone=self.zone,
            slot_length=timedelta(minutes=d.slot_minutes),
            buffer=timedelta(minutes=d.buffer_minutes),
            min_notice=timedelta(minutes=d.min_notice_minutes),
            horizon=timedelta(days=d.horizon_days),
        )

    def windows(self) -> list[slotlib.WeeklyWindow]:
        return [slotlib.WeeklyWindow(w.weekday, w.start_time, w.end_time) for w in self.weekly]

    def date_overrides(self) -> list[slotlib.DateOverride]:
        return [
            slotlib.DateOverride(o.day, o.kind, o.start_time, o.end_time)  # type: ignore[arg-type]
            for o in self.overrides
        ]


def _visible_doctor(actor: Actor | None) -> Select[User, Doctor]:
    """Doctors the actor may see: approved ones; smoke ones only to smoke accounts; a doctor
    always sees themself and an admin sees all."""
    stmt = select(User, Doctor).join(Doctor, Doctor.user_id == User.id)
    if actor is not None and actor.role is Role.ADMIN:
        return stmt
    own = Doctor.user_id == (actor.user_id if actor is not None else -1)
    public: ColumnElement[bool] = Doctor.approved_at.is_not(None)
    if actor is None or not actor.is_smoke:
        public = public & User.is_smoke.is_(False)
    return stmt.where(or_(public, own))


async def _calendars(
    session: AsyncSession, doctors: list[tuple[User, Doctor]], start: datetime, end: datetime
) -> list[DoctorCalendar]:
    ids = [d.user_id for _, d in doctors]
    weekly = await session.scalars(
        select(WeeklyHours).where(WeeklyHours.doctor_id.in_(ids)).order_by(WeeklyHours.start_time)
    )
    # Overrides are by local date; a day either side covers any zone offset.
    overrides = await session.scalars(
        select(ScheduleOverride).where(
            ScheduleOverride.doctor_id.in_(ids),
            ScheduleOverride.day >= (start - timedelta(days=1)).date(),
            ScheduleOverride.day <= (end + timedelta(days=1)).date(),
        )
    )
    by_weekly: dict[int, list[WeeklyHours]] = {i: [] for i in ids}
    for w in weekly:
        by_weekly[w.doctor_id].append(w)
    by_override: dict[int, list[ScheduleOverride]] = {i: [] for i in ids}
    for o in overrides:
        by_override[o.doctor_id].append(o)
    return [DoctorCalendar(u, d, by_weekly[d.user_id], by_override[d.user_id]) for u, d in doctors]


def _check_range(start: datetime, end: datetime, max_days: int) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("start and end need a UTC offset (for example 2026-12-01T00:00:00Z)")
    if end <= start:
        raise InvalidInput("end must be after start", field="end")
    if end - start > timedelta(days=max_days):
        raise InvalidInput(f"a range may span at most {max_days} days", field="end")


async def doctor_slots(
    *,
    session: AsyncSession,
    actor: Actor | None,
    doctor_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    max_days: int = 62,
) -> tuple[DoctorCalendar, list[slotlib.Slot]]:
    """Free slots of a bookable doctor in [start, end): a constant number of queries."""
    _check_range(start, end, max_days)
    async with session.begin():
        row = (
            await session.execute(_visible_doctor(actor).where(Doctor.user_id == doctor_id))
        ).first()
        if row is None:
            raise NotFound("No such doctor.")
        (calendar,) = await _calendars(session, [(row[0], row[1])], start, end)
        busy = await booked.SOURCE.get().busy(session, doctor_ids=[doctor_id], start=start, end=end)
    return calendar, _free(calendar, busy[doctor_id], start, end, now)


class SlotCheck(StrEnum):
    FREE = "free"
    TAKEN = "taken"
    NOT_BOOKABLE = "not_bookable"


async def _approved_calendar(
    session: AsyncSession, doctors: Select[User, Doctor], doctor_id: int, starts_at: datetime
) -> DoctorCalendar:
    row = (await session.execute(doctors.where(Doctor.user_id == doctor_id))).first()
    if row is None or row[1].approved_at is None:
        raise NotFound("No such doctor.")
    end = starts_at + timedelta(minutes=1)
    (calendar,) = await _calendars(session, [(row[0], row[1])], starts_at, end)
    return calendar


async def visible_calendar(
    *, session: AsyncSession, actor: Actor | None, doctor_id: int, starts_at: datetime
) -> DoctorCalendar:
    """The calendar around ``starts_at`` of an approved doctor the actor may see, in the
    caller's transaction (a new booking)."""
    return await _approved_calendar(session, _visible_doctor(actor), doctor_id, starts_at)


async def doctor_calendar(
    *, session: AsyncSession, doctor_id: int, starts_at: datetime
) -> DoctorCalendar:
    """The calendar around ``starts_at`` of an approved doctor, in the caller's transaction,
    whoever asks: the caller already has a reason to see them (an appointment being moved
    names its doctor)."""
    doctors = select(User, Doctor).join(Doctor, Doctor.user_id == User.id)
    return await _approved_calendar(session, doctors, doctor_id, starts_at)


async def slot_verdict(
    *,
    session: AsyncSession,
    calendar: DoctorCalendar,
    starts_at: datetime,
    now: datetime,
    ignore_appointment: int | None = None,
) -> SlotCheck:
    """Whether ``starts_at`` is a free slot of the doctor, taken, or not a bookable time at
    all (outside hours, off the grid, too soon or too far ahead), read in the caller's
    transaction (booking calls this inside its own). ``ignore_appointment``: an appointment
    being moved, whose own time does not count as busy."""
    doctor_id = calendar.doctor.user_id
    end = starts_at + timedelta(minutes=1)
    busy = await booked.SOURCE.get().busy(
        session, doctor_ids=[doctor_id], start=starts_at, end=end, ignore=ignore_appointment
    )
    if any(s.starts_at == starts_at for s in _free(calendar, busy[doctor_id], starts_at, end, now)):
        return SlotCheck.FREE
    if any(s.starts_at == starts_at for s in _free(calendar, [], starts_at, end, now)):
        return SlotCheck.TAKEN
    return SlotCheck.NOT_BOOKABLE


async def check_slot(
    *,
    session: AsyncSession,
    actor: Actor | None,
    doctor_id: int,
    starts_at: datetime,
    now: datetime,
) -> tuple[DoctorCalendar, SlotCheck]:
    """The doctor's calendar and :func:`slot_verdict`, as a use case of its own (the booking
    page asks it before the patient confirms)."""
    async with session.begin():
        calendar = await visible_calendar(
            session=session, actor=actor, doctor_id=doctor_id, starts_at=starts_at
        )
        verdict = await slot_verdict(
            session=session, calendar=calendar, starts_at=starts_at, now=now
        )
        return calendar, verdict


def _free(
    cal: DoctorCalendar,
    busy: list[tuple[datetime, datetime]],
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[slotlib.Slot]:
    if cal.doctor.approved_at is None:
        return []  # an unapproved doctor cannot be booked, not even by themself
    return slotlib.free_slots(
        rules=cal.rules(),
        weekly=cal.windows(),
        overrides=cal.date_overrides(),
        busy=busy,
        range_start=start,
        range_end=end,
        now=now,
    )


async def search_doctors(
    *,
    session: AsyncSession,
    actor: Actor | None,
    specialty: str | None,
    name: str | None,
    now: datetime,
    limit: int = 50,
) -> list[tuple[DoctorCalendar, datetime | None]]:
    """Approved doctors matching the filters, each with their next free slot (if any soon)."""
    stmt = _visible_doctor(actor).where(Doctor.approved_at.is_not(None))
    if actor is None or not actor.is_smoke:
        # Not even an admin's search lists the smoke-test doctor (it is reachable by id).
        stmt = stmt.where(User.is_smoke.is_(False))
    if specialty:
        stmt = stmt.where(func.lower(Doctor.specialty) == specialty.strip().lower())
    if name:
        pattern = "%" + name.strip().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        stmt = stmt.where(User.name.ilike(pattern + "%"))
    stmt = stmt.order_by(User.name).limit(limit)
    end = now + SEARCH_LOOKAHEAD
    async with session.begin():
        doctors = [(u, d) for u, d in (await session.execute(stmt)).all()]
        if not doctors:
            return []
        calendars = await _calendars(session, doctors, now, end)
        ids = [d.user_id for _, d in doctors]
        busy = await booked.SOURCE.get().busy(session, doctor_ids=ids, start=now, end=end)
    result = []
    for cal in calendars:
        free = _free(cal, busy[cal.doctor.user_id], now, end, now)
        result.append((cal, free[0].starts_at if free else None))
    return result


async def specialties(*, session: AsyncSession) -> list[str]:
    """The managed list's names that at least one bookable doctor has, one spelling each."""
    async with session.begin():
        has_doctor = (
            select(Doctor.user_id)
            .join(User, User.id == Doctor.user_id)
            .where(
                func.lower(Doctor.specialty) == func.lower(Specialty.name),
                Doctor.approved_at.is_not(None),
                User.is_smoke.is_(False),
            )
            .exists()
        )
        rows = await session.scalars(
            select(Specialty.name).where(has_doctor).order_by(func.lower(Specialty.name))
        )
        return list(rows)


async def _schedule(session: AsyncSession, doctor_id: int) -> DoctorCalendar:
    row = (
        await session.execute(
            select(User, Doctor)
            .join(Doctor, Doctor.user_id == User.id)
            .where(Doctor.user_id == doctor_id)
        )
    ).first()
    if row is None:
        raise NotFound("No such doctor schedule.")
    weekly = await session.scalars(
        select(WeeklyHours)
        .where(WeeklyHours.doctor_id == doctor_id)
        .order_by(WeeklyHours.weekday, WeeklyHours.start_time)
    )
    overrides = await session.scalars(
        select(ScheduleOverride)
        .where(ScheduleOverride.doctor_id == doctor_id)
        .order_by(ScheduleOverride.day, ScheduleOverride.start_time)
    )
    return DoctorCalendar(row[0], row[1], list(weekly), list(overrides))


async def get_schedule(
    *, session: AsyncSession, actor: Actor | None, doctor_id: int
) -> DoctorCalendar:
    guards.ensure_may_manage_schedule(actor, doctor_id)
    async with session.begin():
        return await _schedule(session, doctor_id)


async def _outside_hours(
    session: AsyncSession, who: Actor, calendar: DoctorCalendar, now: datetime
) -> list[Booked]:
    upcoming = await booked.SOURCE.get().upcoming(
        session, doctor_id=calendar.doctor.user_id, since=now
    )
    if not upcoming:
        return []
    outside = slotlib.outside_hours(
        rules=calendar.rules(),
        weekly=calendar.windows(),
        overrides=calendar.date_overrides(),
        appointments=[(a.starts_at, a.ends_at) for a in upcoming],
    )
    shown = [upcoming[i] for i in outside]
    patients = sorted({b.patient_id for b in shown})
    await audit.record_many(
        session, actor=who, accesses=[audit.Access(p, "read", "appointments") for p in patients]
    )
    return shown


async def appointments_outside_hours(
    *, session: AsyncSession, actor: Actor | None, calendar: DoctorCalendar, now: datetime
) -> list[Booked]:
    """Future booked appointments that the doctor's current hours no longer cover (with
    their patients' names: reading them is recorded in the audit trail)."""
    who = guards.ensure_may_manage_schedule(actor, calendar.doctor.user_id)
    async with session.begin():
        return await _outside_hours(session, who, calendar, now)


async def _locked_doctor(session: AsyncSession, doctor_id: int) -> Doctor:
    """The doctor's row, locked: two changes to one doctor's calendar run one after the
    other."""
    doctor = await session.get(Doctor, doctor_id, with_for_update=True)
    if doctor is None:
        raise NotFound("No such doctor schedule.")
    return doctor


async def save_schedule(
    *, session: AsyncSession, actor: Actor | None, doctor_id: int, data: ScheduleIn, now: datetime
) -> tuple[DoctorCalendar, list[Booked]]:
    """Replace the weekly hours and rules, in one transaction. Booked appointments are never
    cancelled: the ones now outside the hours are returned so the doctor sees them."""
    who = guards.ensure_may_manage_schedule(actor, doctor_id)
    async with session.begin():
        doctor = await _locked_doctor(session, doctor_id)
        await session.execute(delete(WeeklyHours).where(WeeklyHours.doctor_id == doctor_id))
        session.add_all(
            WeeklyHours(doctor_id=doctor_id, weekday=w.weekday, start_time=w.start, end_time=w.end)
            for w in data.weekly
        )
        _apply_rules(doctor, data.rules)
        await session.flush()
        calendar = await _schedule(session, doctor_id)
        return calendar, await _outside_hours(session, who, calendar, now)


def _apply_rules(doctor: Doctor, rules: RulesIn) -> None:
    doctor.slot_minutes = rules.slot_minutes
    doctor.buffer_minutes = rules.buffer_minutes
    doctor.min_notice_minutes = rules.min_notice_minutes
    doctor.horizon_days = rules.horizon_days


async def add_override(
    *, session: AsyncSession, actor: Actor | None, doctor_id: int, data: OverrideIn, now: datetime
) -> tuple[ScheduleOverride, list[Booked]]:
    """A day off, fewer or extra hours on one date, in one transaction; returns the booked
    appointments now outside the hours."""
    who = guards.ensure_may_manage_schedule(actor, doctor_id)
    async with session.begin():
        await _locked_doctor(session, doctor_id)
        override = ScheduleOverride(
            doctor_id=doctor_id,
            day=data.day,
            kind=data.kind,
            start_time=data.start,
            end_time=data.end,
        )
        session.add(override)
        await session.flush()
        calendar = await _schedule(session, doctor_id)
        return override, await _outside_hours(session, who, calendar, now)


async def delete_override(
    *, session: AsyncSession, actor: Actor | None, doctor_id: int, override_id: int
) -> None:
    guards.ensure_may_manage_schedule(actor, doctor_id)
    async with session.begin():
        override = await session.get(ScheduleOverride, override_id)
        if override is None or override.doctor_id != doctor_id:
            raise NotFound("No such override.")
        await session.delete(override)


def weekly_in(calendar: DoctorCalendar) -> list[WeeklyWindowIn]:
    return [
        WeeklyWindowIn(weekday=w.weekday, start=w.start_time, end=w.end_time)
        for w in calendar.weekly
    ]


def rules_in(calendar: DoctorCalendar) -> RulesIn:
    d = calendar.doctor
    return RulesIn(
        slot_minutes=d.slot_minutes,
        buffer_minutes=d.buffer_minutes,
        min_notice_minutes=d.min_notice_minutes,
        horizon_days=d.horizon_days,
    )
