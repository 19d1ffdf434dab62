"""Booking over the real API: free slots, the database's no-overlap guarantee, idempotency,
cancel and reschedule rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import func, select, text

from clinic.appointments.models import Appointment, AppointmentEvent
from factories import make_doctor, make_patient, next_weekday_at, token_for


async def _slots(http, doctor_id: int, headers, start: datetime, days: int = 1) -> list[dict]:
    r = await http.get(
        f"/api/v1/doctors/{doctor_id}/slots",
        params={"start": start.isoformat(), "end": (start + timedelta(days=days)).isoformat()},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()["slots"]


async def test_book_a_free_slot_and_it_disappears(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    auth = await token_for(http, patient)
    day = next_weekday_at(0)
    free = await _slots(http, doctor.user_id, auth, day)
    assert [s["doctor_local"][11:16] for s in free[:2]] == ["09:00", "09:30"]
    r = await http.post(
        "/api/v1/appointments",
        json={"doctor_id": doctor.user_id, "starts_at": free[0]["starts_at"], "reason": "cough"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "booked" and body["doctor_name"] == doctor.name
    after = await _slots(http, doctor.user_id, auth, day)
    assert free[0] not in after and len(after) == len(free) - 1


async def test_taken_slot_is_409_with_clear_message(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    p1, p2 = await make_patient(sessions, settings), await make_patient(sessions, settings)
    start = next_weekday_at(10)
    body = {"doctor_id": doctor.user_id, "starts_at": start.isoformat(), "reason": "x"}
    r1 = await http.post("/api/v1/appointments", json=body, headers=await token_for(http, p1))
    assert r1.status_code == 201
    r2 = await http.post("/api/v1/appointments", json=body, headers=await token_for(http, p2))
    assert r2.status_code == 409
    assert r2.json()["error"]["code"] == "slot_taken"
    assert "already booked" in r2.json()["error"]["message"]


async def test_database_refuses_overlap_even_without_the_code(sessions, settings) -> None:
    """The exclusion constraint holds whatever the application does."""
    doctor = await make_doctor(sessions, settings)
    p1, p2 = await make_patient(sessions, settings), await make_patient(sessions, settings)
    start = next_weekday_at(10)
    sql = text(
        "INSERT INTO appointments"
        " (doctor_id, patient_id, starts_at, ends_at, buffer_ends_at, reason)"
        " VALUES (:d, :p, :s, :e, :e, 'raw')"
    )
    async with sessions() as s, s.begin():
        await s.execute(
            sql,
            {"d": doctor.user_id, "p": p1.user_id, "s": start, "e": start + timedelta(minutes=30)},
        )
    import sqlalchemy.exc

    try:
        async with sessions() as s, s.begin():
            await s.execute(
                sql,
                {
                    "d": doctor.user_id,
                    "p": p2.user_id,
                    "s": start + timedelta(minutes=15),
                    "e": start + timedelta(minutes=45),
                },
            )
    except sqlalchemy.exc.IntegrityError as exc:
        assert "appointments_doctor_no_overlap" in str(exc)
    else:
        raise AssertionError("overlapping appointment was accepted")
    # A cancelled appointment no longer blocks the time.
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE appointments SET status = 'cancelled'"))
        await s.execute(
            sql,
            {
                "d": doctor.user_id,
                "p": p2.user_id,
                "s": start + timedelta(minutes=15),
                "e": start + timedelta(minutes=45),
            },
        )


async def test_patient_cannot_hold_two_overlapping_appointments(http, sessions, settings) -> None:
    d1, d2 = await make_doctor(sessions, settings), await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    auth = await token_for(http, patient)
    start = next_weekday_at(10)
    r1 = await http.post(
        "/api/v1/appointments",
        json={"doctor_id": d1.user_id, "starts_at": start.isoformat(), "reason": "a"},
        headers=auth,
    )
    r2 = await http.post(
        "/api/v1/appointments",
        json={"doctor_id": d2.user_id, "starts_at": start.isoformat(), "reason": "b"},
        headers=auth,
    )
    assert r1.status_code == 201
    assert r2.status_code == 409 and r2.json()["error"]["code"] == "patient_busy"


async def test_buffer_blocks_the_next_slot(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings, buffer_minutes=15, slot_minutes=30)
    patient = await make_patient(sessions, settings)
    auth = await token_for(http, patient)
    day = next_weekday_at(0)
    free = await _slots(http, doctor.user_id, auth, day)
    # 30-minute slots every 45 minutes: 09:00, 09:45, 10:30 ...
    assert [s["doctor_local"][11:16] for s in free[:3]] == ["09:00", "09:45", "10:30"]


async def test_off_grid_or_outside_hours_is_refused(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    auth = await token_for(http, await make_patient(sessions, settings))
    for start in (next_weekday_at(10) + timedelta(minutes=7), next_weekday_at(20)):
        r = await http.post(
            "/api/v1/appointments",
            json={"doctor_id": doctor.user_id, "starts_at": start.isoformat(), "reason": "x"},
            headers=auth,
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "slot_unavailable"
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 0


async def test_min_notice_is_enforced(http, sessions, settings) -> None:
    doctor = await make_doctor(
        sessions, settings, hours=((time(0), time(23, 30)),), min_notice_minutes=24 * 60
    )
    auth = await token_for(http, await make_patient(sessions, settings))
    now = datetime.now(UTC)
    free = await _slots(http, doctor.user_id, auth, now, days=2)
    assert free and datetime.fromisoformat(free[0]["starts_at"]) >= now + timedelta(hours=24)


async def test_idempotency_key_returns_the_same_appointment(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    auth = await token_for(http, await make_patient(sessions, settings))
    body = {
        "doctor_id": doctor.user_id,
        "starts_at": next_weekday_at(11).isoformat(),
        "reason": "x",
    }
    headers = {**auth, "Idempotency-Key": "key-1"}
    r1 = await http.post("/api/v1/appointments", json=body, headers=headers)
    r2 = await http.post("/api/v1/appointments", json=body, headers=headers)
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json()["id"] == r2.json()["id"] and r2.headers["idempotent-replayed"] == "true"
    other = {**body, "reason": "different"}
    r3 = await http.post("/api/v1/appointments", json=other, headers=headers)
    assert r3.status_code == 422 and r3.json()["error"]["code"] == "idempotency_key_reused"
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 1


async def test_concurrent_retries_with_one_key_book_once(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    auth = await token_for(http, await make_patient(sessions, settings))
    body = {
        "doctor_id": doctor.user_id,
        "starts_at": next_weekday_at(11).isoformat(),
        "reason": "x",
    }
    headers = {**auth, "Idempotency-Key": "same-key"}
    results = await asyncio.gather(
        *(http.post("/api/v1/appointments", json=body, headers=headers) for _ in range(8))
    )
    assert sorted({r.status_code for r in results}) in ([200, 201], [201])
    assert len({r.json()["id"] for r in results}) == 1


async def test_patient_cancel_cutoff_and_doctor_cancel_with_reason(
    http, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings, hours=((time(0), time(23, 30)),))
    patient = await make_patient(sessions, settings)
    pauth, dauth = await token_for(http, patient), await token_for(http, doctor)
    soon = await _slots(http, doctor.user_id, pauth, datetime.now(UTC) + timedelta(minutes=30))
    r = await http.post(
        "/api/v1/appointments",
        json={"doctor_id": doctor.user_id, "starts_at": soon[0]["starts_at"], "reason": "x"},
        headers=pauth,
    )
    appt = r.json()["id"]
    late = await http.post(f"/api/v1/appointments/{appt}/cancel", json={}, headers=pauth)
    assert late.status_code == 422 and late.json()["error"]["code"] == "too_late"
    no_reason = await http.post(f"/api/v1/appointments/{appt}/cancel", json={}, headers=dauth)
    assert no_reason.status_code == 422
    ok = await http.post(
        f"/api/v1/appointments/{appt}/cancel", json={"reason": "ill"}, headers=dauth
    )
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"
    detail = (await http.get(f"/api/v1/appointments/{appt}", headers=pauth)).json()
    assert [e["kind"] for e in detail["history"]] == ["booked", "cancelled"]
    assert detail["cancel_reason"] == "ill" and detail["sequence"] == 1


async def test_reschedule_moves_and_failed_reschedule_keeps_old(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    p1, p2 = await make_patient(sessions, settings), await make_patient(sessions, settings)
    a1, a2 = await token_for(http, p1), await token_for(http, p2)
    t1, t2, t3 = next_weekday_at(9), next_weekday_at(10), next_weekday_at(11)
    mine = (
        await http.post(
            "/api/v1/appointments",
            json={"doctor_id": doctor.user_id, "starts_at": t1.isoformat(), "reason": "x"},
            headers=a1,
        )
    ).json()
    await http.post(
        "/api/v1/appointments",
        json={"doctor_id": doctor.user_id, "starts_at": t2.isoformat(), "reason": "y"},
        headers=a2,
    )
    taken = await http.post(
        f"/api/v1/appointments/{mine['id']}/reschedule",
        json={"starts_at": t2.isoformat()},
        headers=a1,
    )
    assert taken.status_code == 409
    still = (await http.get(f"/api/v1/appointments/{mine['id']}", headers=a1)).json()
    assert still["starts_at"] == mine["starts_at"] and still["status"] == "booked"
    moved = await http.post(
        f"/api/v1/appointments/{mine['id']}/reschedule",
        json={"starts_at": t3.isoformat()},
        headers=a1,
    )
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["starts_at"]) == t3 and moved.json()["sequence"] == 1
    # The old time is free again.
    free = await _slots(http, doctor.user_id, a2, t1, days=1)
    assert any(datetime.fromisoformat(s["starts_at"]) == t1 for s in free)
    async with sessions() as s:
        kinds = (
            await s.scalars(
                select(AppointmentEvent.kind)
                .where(AppointmentEvent.appointment_id == mine["id"])
                .order_by(AppointmentEvent.id)
            )
        ).all()
    assert list(kinds) == ["booked", "rescheduled"]


async def test_slot_range_is_bounded(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    start = datetime.now(UTC)
    r = await http.get(
        f"/api/v1/doctors/{doctor.user_id}/slots",
        params={"start": start.isoformat(), "end": (start + timedelta(days=63)).isoformat()},
    )
    assert r.status_code == 422 and "62 days" in r.json()["error"]["message"]
    r = await http.get(
        f"/api/v1/doctors/{doctor.user_id}/slots", params={"start": "yesterday", "end": "x"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


async def test_month_of_slots_costs_constant_queries(app, sessions, settings, engine) -> None:
    """The number of statements for one doctor's slots does not grow with the range."""
    from sqlalchemy import event

    from clinic.scheduling import service

    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    from clinic.appointments.service import book_appointment

    for h in (9, 10, 11):
        async with sessions() as s:
            await book_appointment(
                session=s,
                actor=patient,
                doctor_id=doctor.user_id,
                starts_at=next_weekday_at(h, days_ahead=h),
                reason="x",
                idempotency_key=None,
            )
    counts = []
    for days in (1, 7, 31, 62):
        statements: list[str] = []
        listener = lambda *a: statements.append(a[2])  # noqa: E731, B023 - removed below
        event.listen(engine.sync_engine, "before_cursor_execute", listener)
        start = datetime.now(UTC)
        async with sessions() as s:
            _, free = await service.doctor_slots(
                session=s,
                actor=None,
                doctor_id=doctor.user_id,
                start=start,
                end=start + timedelta(days=days),
                now=start,
            )
        event.remove(engine.sync_engine, "before_cursor_execute", listener)
        counts.append(len([q for q in statements if q.lstrip().upper().startswith("SELECT")]))
        assert free
    assert len(set(counts)) == 1 and counts[0] <= 5, counts
