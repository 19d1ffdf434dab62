"""Synthetic sample data for the deploy rehearsal's data check, written through the clinic's
own services (so its rows have the shape this release writes): the demo doctors and
patients, their bookings (with idempotency keys, events, audit records and queued emails) and
some cancellations. No real patient data.

bluegreen runs it with the **live** release on the rehearsal's scratch database before the
new release's migrations (``[migrations] sample_seed`` in bluegreen.toml), counts the rows
per table, and counts again after the migrations: a table that lost rows fails the deploy
unless a contract migration declared it (docs/migrations.md).

    CLINIC_DATABASE_URL=<scratch> python -m clinic.migrations.sample
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts.models import Doctor, User
from clinic.accounts.service import actor_of
from clinic.appointments import service as appointments
from clinic.core.config import Settings
from clinic.core.db import make_engine, make_sessionmaker, utcnow
from clinic.core.errors import ClinicError
from clinic.scheduling.service import doctor_slots
from clinic.seed import DEMO_DOCTORS, DEMO_PATIENTS, seed_demo

BOOKINGS = 12
CANCEL_EVERY = 4


async def seed_sample(settings: Settings, *, bookings: int = BOOKINGS) -> tuple[int, int]:
    """Demo accounts plus up to ``bookings`` appointments (every ``CANCEL_EVERY``-th one
    cancelled); returns (booked, cancelled). Idempotent for the accounts."""
    from clinic.app import compose_features

    compose_features()  # as create_app does: booking asks scheduling for busy time

    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        await seed_demo(sessions, settings, secrets.token_urlsafe(18))
        return await _book(sessions, settings, bookings)
    finally:
        await engine.dispose()


async def _book(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, bookings: int
) -> tuple[int, int]:
    async with sessions() as session, session.begin():
        patients = list(
            (
                await session.execute(
                    select(User).where(User.email.in_([p[1] for p in DEMO_PATIENTS]))
                )
            ).scalars()
        )
        doctor_ids = list(
            (
                await session.execute(
                    select(Doctor.user_id)
                    .join(User, User.id == Doctor.user_id)
                    .where(User.email.in_([d.email for d in DEMO_DOCTORS]))
                    .order_by(Doctor.user_id)
                )
            ).scalars()
        )
    now = utcnow()
    booked = cancelled = 0
    for i, user in enumerate(patients):
        actor = actor_of(user)
        start = now + timedelta(days=3 + 7 * i)  # a week of its own for each patient
        for j, doctor_id in enumerate(doctor_ids):
            if booked >= bookings:
                return booked, cancelled
            async with sessions() as session:
                _, slots = await doctor_slots(
                    session=session,
                    actor=actor,
                    doctor_id=doctor_id,
                    start=start,
                    end=start + timedelta(days=7),
                    now=now,
                )
                if not slots:
                    continue
                slot = slots[(j * 7) % len(slots)]
                try:
                    view, _ = await appointments.book_appointment(
                        session=session,
                        actor=actor,
                        doctor_id=doctor_id,
                        starts_at=slot.starts_at,
                        reason="sample booking for the deploy rehearsal",
                        idempotency_key=f"sample-{uuid.uuid4()}",
                    )
                except ClinicError:
                    continue  # the patient is busy then: the next doctor
                booked += 1
                if booked % CANCEL_EVERY == 0:
                    await appointments.cancel_appointment(
                        session=session,
                        actor=actor,
                        appointment_id=view.appointment.id,
                        reason=None,
                        settings=settings,
                    )
                    cancelled += 1
    return booked, cancelled


def main() -> None:
    from clinic.cli import load_settings, with_url

    settings = with_url(load_settings())
    booked, cancelled = asyncio.run(seed_sample(settings))
    print(f"sample: demo accounts, {booked} appointments booked, {cancelled} cancelled")


if __name__ == "__main__":
    main()
