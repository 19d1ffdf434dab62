"""The rehearsal's sample seed: synthetic accounts and bookings through the real services."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from clinic.core.config import Settings
from clinic.migrations.sample import BOOKINGS, seed_sample


async def test_sample_books_and_cancels_through_the_services(
    settings: Settings, engine: AsyncEngine
) -> None:
    booked, cancelled = await seed_sample(settings)
    assert (booked, cancelled) == (BOOKINGS, BOOKINGS // 4)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT status, count(*) FROM appointments GROUP BY status ORDER BY 1")
            )
        ).all()
        assert [tuple(r) for r in rows] == [("booked", 9), ("cancelled", 3)]
        for table in ("appointment_events", "idempotency_keys", "audit_records"):
            count = await conn.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608
            assert count and count >= BOOKINGS, table
    # Again: the same accounts, more bookings.
    async with engine.connect() as conn:
        users = await conn.scalar(text("SELECT count(*) FROM users"))
    await seed_sample(settings, bookings=2)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM users")) == users
        assert await conn.scalar(text("SELECT count(*) FROM appointments")) == BOOKINGS + 2
