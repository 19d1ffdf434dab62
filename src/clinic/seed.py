"""Demo data (doctors in several specialties and zones, with schedules; demo patients) and the
synthetic smoke-test accounts. Idempotent: running it again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts import service as accounts
from clinic.accounts.models import Doctor, User
from clinic.accounts.schemas import DoctorCreate, PatientCreate
from clinic.core.config import Settings
from clinic.scheduling.models import WeeklyHours

SMOKE_PATIENT_EMAIL = "smoke-patient@smoke.example.org"
SMOKE_DOCTOR_EMAIL = "smoke-doctor@smoke.example.org"


@dataclass(frozen=True)
class DemoDoctor:
    name: str
    email: str
    specialty: str
    time_zone: str
    licence: str
    bio: str
    hours: tuple[tuple[time, time], ...] = ((time(9), time(12)), (time(13), time(17)))
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    slot_minutes: int = 30
    buffer_minutes: int = 0


DEMO_DOCTORS = (
    DemoDoctor(
        "Dr. Anna Weber",
        "anna.weber@demo.example.org",
        "General practice",
        "Europe/Berlin",
        "DE-1001",
        "Family doctor with twenty years of practice.",
    ),
    DemoDoctor(
        "Dr. James Carter",
        "james.carter@demo.example.org",
        "Cardiology",
        "America/New_York",
        "US-2002",
        "Heart health, blood pressure, check-ups.",
        slot_minutes=45,
        buffer_minutes=15,
    ),
    DemoDoctor(
        "Dr. Yuki Tanaka",
        "yuki.tanaka@demo.example.org",
        "Dermatology",
        "Asia/Tokyo",
        "JP-3003",
        "Skin conditions and follow-ups by video.",
        hours=((time(10), time(13)), (time(14), time(18))),
    ),
    DemoDoctor(
        "Dr. Priya Nair",
        "priya.nair@demo.example.org",
        "Psychiatry",
        "Europe/London",
        "UK-4004",
        "Talking therapy and medication reviews.",
        slot_minutes=50,
        buffer_minutes=10,
        weekdays=(0, 1, 2, 3),
    ),
    DemoDoctor(
        "Dr. Lucas Silva",
        "lucas.silva@demo.example.org",
        "Pediatrics",
        "America/Sao_Paulo",
        "BR-5005",
        "Children's health from birth to 16.",
        weekdays=(0, 1, 2, 3, 4, 5),
    ),
    DemoDoctor(
        "Dr. Emma Jensen",
        "emma.jensen@demo.example.org",
        "General practice",
        "Europe/Copenhagen",
        "DK-6006",
        "General medicine, travel advice.",
        hours=((time(8), time(12)),),
    ),
)

DEMO_PATIENTS = (
    ("Maria Rossi", "maria.rossi@demo.example.org", date(1985, 4, 12), "Europe/Rome"),
    ("John Smith", "john.smith@demo.example.org", date(1972, 11, 3), "America/Chicago"),
    ("Aiko Sato", "aiko.sato@demo.example.org", date(1999, 1, 25), "Asia/Tokyo"),
)


async def _exists(sessions: async_sessionmaker[AsyncSession], email: str) -> bool:
    async with sessions() as session, session.begin():
        return await session.scalar(select(User.id).where(User.email == email)) is not None


async def _doctor(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    d: DemoDoctor,
    password: str,
    *,
    is_smoke: bool = False,
) -> bool:
    if await _exists(sessions, d.email):
        return False
    async with sessions() as session:
        user = await accounts.register_doctor(
            session=session,
            data=DoctorCreate(
                name=d.name,
                email=d.email,
                password=password,
                time_zone=d.time_zone,
                specialty=d.specialty,
                licence_number=d.licence,
                bio=d.bio,
            ),
            settings=settings,
            is_smoke=is_smoke,
            approved=True,
            listed=False,
        )
        async with session.begin():
            doctor = await session.get(Doctor, user.id)
            assert doctor is not None
            doctor.slot_minutes, doctor.buffer_minutes = d.slot_minutes, d.buffer_minutes
            doctor.min_notice_minutes = 0 if is_smoke else 120
            session.add_all(
                WeeklyHours(doctor_id=user.id, weekday=wd, start_time=s, end_time=e)
                for wd in d.weekdays
                for s, e in d.hours
            )
    return True


async def _patient(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    name: str,
    email: str,
    born: date,
    zone: str,
    password: str,
    *,
    is_smoke: bool = False,
) -> bool:
    if await _exists(sessions, email):
        return False
    async with sessions() as session:
        await accounts.register_patient(
            session=session,
            data=PatientCreate(
                name=name, email=email, password=password, date_of_birth=born, time_zone=zone
            ),
            settings=settings,
            is_smoke=is_smoke,
        )
    return True


async def seed_demo(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, password: str
) -> int:
    """Create the demo accounts that do not exist yet; returns how many were created."""
    created = 0
    for d in DEMO_DOCTORS:
        created += await _doctor(sessions, settings, d, password)
    for name, email, born, zone in DEMO_PATIENTS:
        created += await _patient(sessions, settings, name, email, born, zone, password)
    return created


async def seed_smoke(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, password: str
) -> int:
    """The smoke-test patient and doctor: synthetic, hidden from search and reports, working
    around the clock so the smoke journey always finds a slot, and never bookable by a real
    patient (a real patient does not see the smoke doctor)."""
    all_day = ((time(0), time(23, 59)),)
    doctor = DemoDoctor(
        "Smoke Test Doctor",
        SMOKE_DOCTOR_EMAIL,
        "Smoke testing",
        "UTC",
        "SMOKE-0001",
        "Synthetic account used by deployment smoke tests.",
        hours=all_day,
        weekdays=(0, 1, 2, 3, 4, 5, 6),
        slot_minutes=15,
    )
    created = int(await _doctor(sessions, settings, doctor, password, is_smoke=True))
    created += await _patient(
        sessions,
        settings,
        "Smoke Test Patient",
        SMOKE_PATIENT_EMAIL,
        date(2000, 1, 1),
        "UTC",
        password,
        is_smoke=True,
    )
    return created
