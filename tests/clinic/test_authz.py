"""Every forbidden access, tried from the attacker's side: 403 or 404, never data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import make_admin, make_doctor, make_patient, next_weekday_at, token_for


async def _book(http, doctor, patient_auth, hour: int = 10) -> dict:
    r = await http.post(
        "/api/v1/appointments",
        json={
            "doctor_id": doctor.user_id,
            "starts_at": next_weekday_at(hour).isoformat(),
            "reason": "secret symptom XYZ",
        },
        headers=patient_auth,
    )
    assert r.status_code == 201, r.text
    return r.json()


def _no_data(r, *secrets: str) -> None:
    assert r.status_code in (401, 403, 404), (r.status_code, r.text)
    for s in secrets:
        assert s not in r.text
    assert "error" in r.json()


async def test_other_patients_appointment_is_not_visible_or_changeable(
    http, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    victim, attacker = (
        await make_patient(sessions, settings),
        await make_patient(sessions, settings),
    )
    appt = await _book(http, doctor, await token_for(http, victim))
    evil = await token_for(http, attacker)
    i = appt["id"]
    _no_data(await http.get(f"/api/v1/appointments/{i}", headers=evil), "XYZ")
    _no_data(await http.post(f"/api/v1/appointments/{i}/cancel", json={}, headers=evil))
    _no_data(
        await http.post(
            f"/api/v1/appointments/{i}/reschedule",
            json={"starts_at": next_weekday_at(11).isoformat()},
            headers=evil,
        )
    )
    _no_data(
        await http.post(
            f"/api/v1/appointments/{i}/status", json={"status": "completed"}, headers=evil
        )
    )
    listed = await http.get("/api/v1/appointments", headers=evil)
    assert listed.status_code == 200 and listed.json() == []
    _no_data(await http.get(f"/api/v1/patients/{victim.user_id}", headers=evil), victim.email)
    _no_data(
        await http.patch(f"/api/v1/patients/{victim.user_id}", json={"name": "pwned"}, headers=evil)
    )
    # Nothing changed.
    mine = (
        await http.get(f"/api/v1/appointments/{i}", headers=await token_for(http, victim))
    ).json()
    assert mine["status"] == "booked" and mine["starts_at"] == appt["starts_at"]


async def test_other_doctor_sees_neither_schedule_nor_appointments(
    http, sessions, settings
) -> None:
    d1, d2 = await make_doctor(sessions, settings), await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await _book(http, d1, await token_for(http, patient))
    evil = await token_for(http, d2)
    _no_data(await http.get(f"/api/v1/doctors/{d1.user_id}/schedule", headers=evil))
    _no_data(
        await http.put(f"/api/v1/doctors/{d1.user_id}/schedule", json={"weekly": []}, headers=evil)
    )
    _no_data(
        await http.post(
            f"/api/v1/doctors/{d1.user_id}/overrides",
            json={"day": "2030-01-01", "kind": "off"},
            headers=evil,
        )
    )
    _no_data(await http.get(f"/api/v1/appointments/{appt['id']}", headers=evil), "XYZ")
    _no_data(
        await http.post(
            f"/api/v1/appointments/{appt['id']}/cancel", json={"reason": "x"}, headers=evil
        )
    )
    _no_data(await http.get(f"/api/v1/patients/{patient.user_id}", headers=evil))
    # The treating doctor does see the appointment.
    own = await http.get(f"/api/v1/appointments/{appt['id']}", headers=await token_for(http, d1))
    assert own.status_code == 200 and own.json()["reason"] == "secret symptom XYZ"


async def test_unapproved_doctor_cannot_be_found_or_booked(http, sessions, settings) -> None:
    pending = await make_doctor(sessions, settings, approved=False, name="Dr. Pending")
    auth = await token_for(http, await make_patient(sessions, settings))
    start = datetime.now(UTC)
    _no_data(
        await http.get(
            f"/api/v1/doctors/{pending.user_id}/slots",
            params={"start": start.isoformat(), "end": (start + timedelta(days=7)).isoformat()},
            headers=auth,
        )
    )
    found = await http.get("/api/v1/doctors", params={"name": "Dr. Pending"}, headers=auth)
    assert found.json() == []
    r = await http.post(
        "/api/v1/appointments",
        json={
            "doctor_id": pending.user_id,
            "starts_at": next_weekday_at(10).isoformat(),
            "reason": "x",
        },
        headers=auth,
    )
    _no_data(r)


async def test_only_admin_approves_doctors(http, sessions, settings) -> None:
    pending = await make_doctor(sessions, settings, approved=False)
    patient, doctor = await make_patient(sessions, settings), await make_doctor(sessions, settings)
    for who in (patient, doctor, pending):
        auth = await token_for(http, who)
        assert (await http.get("/api/v1/admin/doctors/pending", headers=auth)).status_code == 403
        assert (
            await http.post(f"/api/v1/admin/doctors/{pending.user_id}/approve", headers=auth)
        ).status_code == 403
    assert (await http.post(f"/api/v1/admin/doctors/{pending.user_id}/approve")).status_code == 401
    admin = await token_for(http, await make_admin(sessions, settings))
    listed = await http.get("/api/v1/admin/doctors/pending", headers=admin)
    assert [d["id"] for d in listed.json()] == [pending.user_id]
    assert (
        await http.post(f"/api/v1/admin/doctors/{pending.user_id}/approve", headers=admin)
    ).status_code == 204
    assert (await http.get("/api/v1/admin/doctors/pending", headers=admin)).json() == []


async def test_doctor_cannot_book_and_anonymous_gets_401(http, sessions, settings) -> None:
    d1, d2 = await make_doctor(sessions, settings), await make_doctor(sessions, settings)
    body = {"doctor_id": d1.user_id, "starts_at": next_weekday_at(10).isoformat(), "reason": "x"}
    r = await http.post("/api/v1/appointments", json=body, headers=await token_for(http, d2))
    assert r.status_code == 403
    assert (await http.post("/api/v1/appointments", json=body)).status_code == 401
    assert (await http.get("/api/v1/appointments")).status_code == 401


async def test_revoked_or_forged_token_gets_nothing(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    auth = await token_for(http, patient)
    assert (await http.get("/api/v1/me", headers=auth)).status_code == 200
    tokens = (await http.get("/api/v1/tokens", headers=auth)).json()
    other = await token_for(http, await make_patient(sessions, settings))
    # Someone else's token id cannot be revoked.
    assert (
        await http.delete(f"/api/v1/tokens/{tokens[0]['id']}", headers=other)
    ).status_code == 404
    assert (await http.delete(f"/api/v1/tokens/{tokens[0]['id']}", headers=auth)).status_code == 204
    assert (await http.get("/api/v1/me", headers=auth)).status_code == 401
    assert (
        await http.get("/api/v1/me", headers={"Authorization": "Bearer clk_forged"})
    ).status_code == 401


async def test_admin_sees_everything(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await _book(http, doctor, await token_for(http, patient))
    admin = await token_for(http, await make_admin(sessions, settings))
    assert (await http.get(f"/api/v1/appointments/{appt['id']}", headers=admin)).status_code == 200
    assert (await http.get(f"/api/v1/patients/{patient.user_id}", headers=admin)).status_code == 200
    assert (
        await http.get(f"/api/v1/doctors/{doctor.user_id}/schedule", headers=admin)
    ).status_code == 200
