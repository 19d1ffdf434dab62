"""Seed data skips the specialty list check (the deploy rehearsal seeds it onto a schema that
may predate the list), so it must use the list's own spellings: every demo doctor's
specialty is on the managed list the migrations create."""

from __future__ import annotations

from sqlalchemy import select

from clinic.accounts.models import Doctor
from clinic.accounts.specialties import list_specialties
from clinic.seed import seed_demo


async def test_demo_doctors_specialties_are_on_the_list(sessions, settings) -> None:
    await seed_demo(sessions, settings, "demo password 0123456789")
    async with sessions() as s:
        listed = {v.name for v in await list_specialties(session=s)}
    async with sessions() as s:
        used = set((await s.scalars(select(Doctor.specialty))).all())
    assert used, "the demo seeded no doctor"
    assert used <= listed, used - listed
