"""The audit trail: reads by an admin and by the patient's doctor are recorded with who,
which patient, what, from where and in which request; records are append-only in the
database; a failed audit write fails the request and the change it described."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from clinic.appointments.models import Appointment
from clinic.core.audit import AuditRecord
from factories import make_admin, make_doctor, make_patient, next_weekday_at, token_for


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"worker_in_process": False})


async def _booked(http, sessions, settings):
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    auth = await token_for(http, patient)
    r = await http.post(
        "/api/v1/appointments",
        json={
            "doctor_id": doctor.user_id,
            "starts_at": next_weekday_at(10).isoformat(),
            "reason": "Cough",
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    return doctor, patient, auth, r.json()["id"]


async def _records(sessions, **where) -> list[AuditRecord]:
    async with sessions() as s:
        stmt = select(AuditRecord).order_by(AuditRecord.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(AuditRecord, key) == value)
        return list(await s.scalars(stmt))


async def test_admin_and_doctor_reads_are_recorded_and_shown_to_the_patient(
    http, sessions, settings
) -> None:
    doctor, patient, patient_auth, appt_id = await _booked(http, sessions, settings)
    admin = await make_admin(sessions, settings)
    admin_auth = await token_for(http, admin)
    doctor_auth = await token_for(http, doctor)

    r = await http.get(
        f"/api/v1/patients/{patient.user_id}", headers={**admin_auth, "X-Request-Id": "req-admin-1"}
    )
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-admin-1"
    r = await http.get(
        f"/api/v1/appointments/{appt_id}", headers={**doctor_auth, "X-Request-Id": "req-doc-1"}
    )
    assert r.status_code == 200
    r = await http.get("/api/v1/appointments", headers=doctor_auth)  # the doctor's agenda
    assert r.status_code == 200 and len(r.json()) == 1
    generated = r.headers["X-Request-Id"]
    assert len(generated) >= 16  # none sent: one was made up and echoed

    by_admin = await _records(sessions, actor_id=admin.user_id)
    assert [
        (a.actor_role, a.patient_id, a.action, a.subject, a.address, a.request_id) for a in by_admin
    ] == [("admin", patient.user_id, "read", "profile", "127.0.0.1", "req-admin-1")]
    by_doctor = await _records(sessions, actor_id=doctor.user_id)
    assert [(a.actor_role, a.patient_id, a.action, a.subject, a.request_id) for a in by_doctor] == [
        ("doctor", patient.user_id, "read", f"appointment:{appt_id}", "req-doc-1"),
        ("doctor", patient.user_id, "read", "appointments", generated),
    ]
    own = await _records(sessions, actor_id=patient.user_id)
    assert ("create", f"appointment:{appt_id}") in [(a.action, a.subject) for a in own]

    # The patient sees who accessed their record.
    mine = await http.get("/api/v1/me/audit", headers=patient_auth)
    assert mine.status_code == 200
    who = {(m["actor_name"], m["actor_role"], m["subject"]) for m in mine.json()}
    assert (admin.name, "admin", "profile") in who
    assert (doctor.name, "doctor", f"appointment:{appt_id}") in who
    page = await http.get("/me/audit", headers=patient_auth)
    assert page.status_code == 200 and admin.name in page.text and doctor.name in page.text

    # An admin searches the trail; nobody else may.
    found = await http.get(
        "/api/v1/audit",
        params={"patient_id": patient.user_id, "actor_id": doctor.user_id},
        headers=admin_auth,
    )
    assert {r["subject"] for r in found.json()} == {f"appointment:{appt_id}", "appointments"}
    page = await http.get(
        "/admin/audit",
        params={"patient_id": patient.user_id, "since": "2000-01-01"},
        headers=admin_auth,
    )
    assert page.status_code == 200 and "req-admin-1" in page.text and "req-doc-1" in page.text
    for auth in (patient_auth, doctor_auth):
        assert (await http.get("/api/v1/audit", headers=auth)).status_code == 403
        assert (await http.get("/admin/audit", headers=auth)).status_code == 403
    assert (await http.get("/api/v1/me/audit", headers=doctor_auth)).status_code == 403


async def test_audit_records_cannot_be_changed_with_the_apps_credentials(
    http, sessions, settings, engine
) -> None:
    await _booked(http, sessions, settings)
    assert await _records(sessions)
    for statement in (
        "UPDATE audit_records SET actor_id = NULL",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(AuditRecord)) > 0
        assert await s.scalar(select(func.count()).where(AuditRecord.actor_id.is_(None))) == 0


async def test_a_failed_audit_write_fails_the_request_and_its_change(
    http, sessions, settings, engine
) -> None:
    doctor, patient, auth, appt_id = await _booked(http, sessions, settings)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION break_audit() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN RAISE EXCEPTION 'audit storage broken'; END; $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER break_audit BEFORE INSERT ON audit_records"
                " FOR EACH ROW EXECUTE FUNCTION break_audit()"
            )
        )
    cancel = await http.post(f"/api/v1/appointments/{appt_id}/cancel", json={}, headers=auth)
    assert cancel.status_code == 500
    booking = await http.post(
        "/api/v1/appointments",
        json={
            "doctor_id": doctor.user_id,
            "starts_at": next_weekday_at(14).isoformat(),
            "reason": "x",
        },
        headers=auth,
    )
    assert booking.status_code == 500
    read = await http.get(f"/api/v1/patients/{patient.user_id}", headers=auth)
    assert read.status_code == 500
    async with sessions() as s:
        rows = (await s.execute(select(Appointment.id, Appointment.status))).all()
        jobs = await s.scalar(
            text(
                "SELECT count(*) FROM procrastinate_jobs"
                " WHERE task_name = 'clinic.notify.send_email'"
            )
        )
    assert rows == [(appt_id, "booked")]  # not cancelled, nothing new booked
    assert jobs == 2  # only the first booking's emails
