"""A deadlock or serialization failure inside booking, rescheduling or cancelling is retried
in a fresh transaction, and one that persists is answered with 409, never 500.

PostgreSQL raises the real errors here (SQLSTATE 40P01 and 40001), from a trigger on the
appointments table: races that deadlock are too rare to provoke on demand, so the trigger
plays the loser of one. Its counter is a sequence, which a rollback does not undo.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clinic.appointments.models import Appointment
from factories import make_doctor, make_patient, next_weekday_at, token_for


async def _lose_races(engine: AsyncEngine, *, event: str, sqlstate: str, times: int) -> None:
    """The next ``times`` statements ``event`` (INSERT or UPDATE) on appointments fail with
    ``sqlstate``; the ones after succeed."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE race_losses"))
        await conn.execute(
            text(
                "CREATE FUNCTION lose_race() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN IF nextval('race_losses') <= {times} THEN"
                f" RAISE EXCEPTION 'lost a race' USING ERRCODE = '{sqlstate}'; END IF;"
                " RETURN NEW; END; $$"
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER lose_race BEFORE {event} ON appointments"
                " FOR EACH ROW EXECUTE FUNCTION lose_race()"
            )
        )


async def _losses(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT last_value FROM race_losses")))


async def _email_jobs(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM procrastinate_jobs"
                    " WHERE task_name = 'clinic.notify.send_email'"
                )
            )
        )


async def _book(http: httpx.AsyncClient, auth: dict[str, str], doctor_id: int) -> httpx.Response:
    body = {"doctor_id": doctor_id, "starts_at": next_weekday_at(10).isoformat(), "reason": "x"}
    return await http.post("/api/v1/appointments", json=body, headers=auth)


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_a_booking_that_loses_a_race_is_retried(
    http, sessions, settings, engine, sqlstate
) -> None:
    doctor = await make_doctor(sessions, settings)
    auth = await token_for(http, await make_patient(sessions, settings))
    await _lose_races(engine, event="INSERT", sqlstate=sqlstate, times=2)
    r = await _book(http, auth, doctor.user_id)
    assert r.status_code == 201, r.text
    assert await _losses(engine) == 3  # two rolled-back tries, then the one that committed
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 1
    assert await _email_jobs(engine) == 2  # only the committed try's


async def test_a_booking_that_keeps_losing_is_a_409(http, sessions, settings, engine) -> None:
    doctor = await make_doctor(sessions, settings)
    auth = await token_for(http, await make_patient(sessions, settings))
    await _lose_races(engine, event="INSERT", sqlstate="40P01", times=1000)
    r = await _book(http, auth, doctor.user_id)
    assert r.status_code == 409 and r.json()["error"]["code"] == "slot_taken", r.text
    assert 1 < await _losses(engine) < 10  # retried, a bounded number of times
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 0
    assert await _email_jobs(engine) == 0


async def test_reschedule_and_cancel_that_keep_losing_are_409s(
    http, sessions, settings, engine
) -> None:
    doctor = await make_doctor(sessions, settings)
    auth = await token_for(http, await make_patient(sessions, settings))
    starts_at = next_weekday_at(10)
    booked = await http.post(
        "/api/v1/appointments",
        json={"doctor_id": doctor.user_id, "starts_at": starts_at.isoformat(), "reason": "x"},
        headers=auth,
    )
    appointment_id = booked.json()["id"]
    await _lose_races(engine, event="UPDATE", sqlstate="40001", times=1000)
    moved = await http.post(
        f"/api/v1/appointments/{appointment_id}/reschedule",
        json={"starts_at": next_weekday_at(11).isoformat()},
        headers=auth,
    )
    assert moved.status_code == 409, moved.text
    cancelled = await http.post(
        f"/api/v1/appointments/{appointment_id}/cancel", json={}, headers=auth
    )
    assert cancelled.status_code == 409, cancelled.text
    async with sessions() as s:
        appointment = await s.get(Appointment, appointment_id)
    assert appointment is not None
    assert (appointment.status, appointment.starts_at) == ("booked", starts_at)
    assert await _email_jobs(engine) == 2  # the booking's; nothing of the failed changes
