"""Factories for test data, built through the real services."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts import service as accounts
from clinic.accounts.guards import Actor
from clinic.accounts.models import Doctor, User
from clinic.accounts.schemas import DoctorCreate, PatientCreate
from clinic.core.config import Settings
from clinic.scheduling.models import WeeklyHours

PASSWORD = "correct horse battery staple"
_seq = itertools.count(1)


async def make_patient(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    name: str | None = None,
    time_zone: str = "Europe/Berlin",
) -> Actor:
    n = next(_seq)
    async with sessions() as session:
        user = await accounts.register_patient(
            session=session,
            data=PatientCreate(
                name=name or f"Patient {n}",
                email=f"patient{n}-{id(sessions)}@example.org",
                password=PASSWORD,
                date_of_birth=date(1990, 1, 1),
                time_zone=time_zone,
            ),
            settings=settings,
        )
    return accounts.actor_of(user)


async def make_doctor(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    name: str | None = None,
    specialty: str = "Cardiology",
    time_zone: str = "Europe/Berlin",
    approved: bool = True,
    hours: tuple[tuple[time, time], ...] = ((time(9), time(12)), (time(13), time(17))),
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6),
    slot_minutes: int = 30,
    buffer_minutes: int = 0,
    min_notice_minutes: int = 0,
) -> Actor:
    n = next(_seq)
    async with sessions() as session:
        user = await accounts.register_doctor(
            session=session,
            data=DoctorCreate(
                name=name or f"Dr. Test {n}",
                email=f"doctor{n}-{id(sessions)}@example.org",
                password=PASSWORD,
                time_zone=time_zone,
                specialty=specialty,
                licence_number=f"LIC-{n}-{id(sessions)}",
            ),
            settings=settings,
            approved=approved,
        )
        async with session.begin():
            await session.execute(
                update(Doctor)
                .where(Doctor.user_id == user.id)
                .values(
                    slot_minutes=slot_minutes,
                    buffer_minutes=buffer_minutes,
                    min_notice_minutes=min_notice_minutes,
                )
            )
            session.add_all(
                WeeklyHours(doctor_id=user.id, weekday=wd, start_time=s, end_time=e)
                for wd in weekdays
                for s, e in hours
            )
        actor = await accounts.load_actor(session=session, user_id=user.id)
    assert actor is not None
    return actor


async def make_admin(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Actor:
    n = next(_seq)
    async with sessions() as session:
        user = await accounts.create_admin(
            session=session,
            email=f"admin{n}-{id(sessions)}@example.org",
            name=f"Admin {n}",
            password=PASSWORD,
            settings=settings,
        )
    return accounts.actor_of(user)


async def token_for(http: httpx.AsyncClient, actor: Actor) -> dict[str, str]:
    """Bearer-token headers for ``actor``, obtained over the real API."""
    r = await http.post("/api/v1/auth/token", json={"email": actor.email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def set_user(
    sessions: async_sessionmaker[AsyncSession], user_id: int, **values: object
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user_id).values(**values))


def next_weekday_at(hour: int, zone: str = "Europe/Berlin", *, days_ahead: int = 3) -> datetime:
    """A local time ``days_ahead`` days from now in ``zone``, as UTC."""
    from zoneinfo import ZoneInfo

    day = (datetime.now(UTC) + timedelta(days=days_ahead)).astimezone(ZoneInfo(zone)).date()
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(zone)).astimezone(UTC)
