"""The smoke hook's journey against a real running app."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from clinic.appointments.models import Appointment
from clinic.seed import seed_smoke
from clinic.smoke import SmokeFailed, run_smoke


async def test_smoke_journey_books_and_cancels(app, sessions, settings) -> None:
    await seed_smoke(sessions, settings, settings.smoke_password)
    lines: list[str] = []
    await asyncio.to_thread(run_smoke, app.base_url, settings.smoke_password, echo=lines.append)
    assert lines[-1] == "smoke: all steps passed"
    async with sessions() as s:
        statuses = (
            await s.execute(select(Appointment.status, func.count()).group_by(Appointment.status))
        ).all()
    assert statuses == [("cancelled", 1)]


async def test_smoke_names_the_failing_step(app, sessions, settings) -> None:
    await seed_smoke(sessions, settings, settings.smoke_password)
    with pytest.raises(SmokeFailed) as info:
        await asyncio.to_thread(run_smoke, app.base_url, "wrong password", echo=lambda _: None)
    assert info.value.step == "log in"


def test_smoke_names_the_step_when_nothing_answers() -> None:
    from conftest import free_port

    with pytest.raises(SmokeFailed) as info:
        run_smoke(f"http://127.0.0.1:{free_port()}", "pw", echo=lambda _: None, timeout=2)
    assert info.value.step == "ready"
    assert "ConnectError" in str(info.value)
