"""The smoke-test accounts (the deploy's synthetic doctor and patient) are in no list a person
reads: not the admin's doctor search, pending doctors, appointments or audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from clinic.core.audit import AuditRecord
from factories import make_admin, make_doctor, make_patient, set_user, token_for
from visits_fixtures import make_appointment


async def _smoke_world(sessions, settings):
    smoke_doctor = await make_doctor(sessions, settings, name="Smoke Test Doctor")
    smoke_patient = await make_patient(sessions, settings, name="Smoke Test Patient")
    waiting = await make_doctor(sessions, settings, name="Smoke Waiting Doctor", approved=False)
    for who in (smoke_doctor, smoke_patient, waiting):
        await set_user(sessions, who.user_id, is_smoke=True)
    await make_appointment(
        sessions, doctor=smoke_doctor, patient=smoke_patient, starts_in=timedelta(days=1)
    )
    async with sessions() as session, session.begin():
        await session.execute(
            insert(AuditRecord).values(
                at=datetime.now(UTC),
                actor_id=smoke_doctor.user_id,
                actor_role="doctor",
                patient_id=smoke_patient.user_id,
                action="read",
                subject="appointments",
            )
        )
    return smoke_doctor


async def test_smoke_accounts_are_in_no_admin_list(http, sessions, settings) -> None:
    real_doctor = await make_doctor(sessions, settings, name="Real Doctor")
    real_patient = await make_patient(sessions, settings, name="Real Patient")
    await make_doctor(sessions, settings, name="Real Waiting Doctor", approved=False)
    await make_appointment(
        sessions, doctor=real_doctor, patient=real_patient, starts_in=timedelta(days=1)
    )
    smoke_doctor = await _smoke_world(sessions, settings)
    admin = await make_admin(sessions, settings)
    auth = await token_for(http, admin)

    doctors = (await http.get("/api/v1/doctors", headers=auth)).json()
    assert [d["name"] for d in doctors] == ["Real Doctor"]
    page = await http.get("/doctors", headers=auth)
    assert "Real Doctor" in page.text and "Smoke Test" not in page.text

    pending = await http.get("/admin/doctors", headers=auth)
    assert "Real Waiting Doctor" in pending.text and "Smoke Waiting" not in pending.text

    appointments = (await http.get("/api/v1/appointments", headers=auth)).json()
    assert len(appointments) == 1
    page = await http.get("/appointments", headers=auth)
    assert "Real Patient" in page.text and "Smoke Test" not in page.text

    trail = (await http.get("/api/v1/audit", headers=auth)).json()
    assert trail and not [e for e in trail if "Smoke" in e["summary"]]
    page = await http.get("/admin/audit", params={"staff_name": "smoke"}, headers=auth)
    assert page.status_code == 200 and "No record matches." in page.text

    # Still reachable by id, for whoever investigates a failed deploy.
    r = await http.get(f"/doctors/{smoke_doctor.user_id}", headers=auth)
    assert r.status_code == 200 and "Smoke Test Doctor" in r.text
