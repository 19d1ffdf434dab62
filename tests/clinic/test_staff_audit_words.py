"""The audit trail in words, searched by patient or staff name and by date (API and page)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from clinic.audit.wording import Who, describe
from clinic.core.audit import AuditRecord
from factories import make_admin, make_doctor, make_patient, token_for

ANNA = Who(7, "Dr. Anna Weber", "doctor")
MARIA = Who(9, "Maria Rossi", "patient")


def test_records_read_as_sentences() -> None:
    assert (
        describe(actor=ANNA, patient=MARIA, action="read", subject="visit_notes:appointment:3")
        == "Dr. Anna Weber read Maria Rossi's visit note"
    )
    assert (
        describe(actor=ANNA, patient=MARIA, action="create", subject="visit_note:12")
        == "Dr. Anna Weber wrote Maria Rossi's visit note"
    )
    assert (
        describe(
            actor=Who(2, "Paul Klee", "doctor"),
            patient=MARIA,
            action="read",
            subject="appointments",
        )
        == "Dr. Paul Klee read Maria Rossi's appointments"
    )
    assert (
        describe(actor=MARIA, patient=MARIA, action="create", subject="appointment:4")
        == "Maria Rossi booked their own appointment"
    )
    assert (
        describe(
            actor=Who(None, None, "system"), patient=MARIA, action="update", subject="appointment:4"
        )
        == "The clinic (automatic) changed Maria Rossi's appointment"
    )
    assert (
        describe(
            actor=Who(1, "Ada Admin", "admin"), patient=MARIA, action="read", subject="profile"
        )
        == "Ada Admin read Maria Rossi's profile"
    )
    # A subject this module does not know yet still reads as words, and a removed account
    # still has a name.
    assert (
        describe(
            actor=Who(5, None, "admin"), patient=None, action="update", subject="password_reset:9"
        )
        == "User 5 changed password reset"
    )


async def _add(sessions, at: datetime, actor, patient, action: str, subject: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            insert(AuditRecord).values(
                at=at,
                actor_id=actor.user_id,
                actor_role=str(actor.role),
                patient_id=patient.user_id,
                action=action,
                subject=subject,
            )
        )


async def test_search_by_names_and_date(http, sessions, settings) -> None:
    anna = await make_doctor(sessions, settings, name="Dr. Anna Weber")
    paul = await make_doctor(sessions, settings, name="Paul Klee")
    maria = await make_patient(sessions, settings, name="Maria Rossi")
    marco = await make_patient(sessions, settings, name="Marco Bianchi")
    admin = await make_admin(sessions, settings)
    auth = await token_for(http, admin)
    await _add(
        sessions,
        datetime(2026, 3, 2, 9, tzinfo=UTC),
        anna,
        maria,
        "read",
        "visit_notes:appointment:1",
    )
    await _add(sessions, datetime(2026, 3, 5, 9, tzinfo=UTC), paul, maria, "read", "appointments")
    await _add(sessions, datetime(2026, 3, 5, 10, tzinfo=UTC), anna, marco, "read", "profile")

    async def words(**params: str) -> list[str]:
        r = await http.get(
            "/api/v1/audit",
            params={"since": "2026-01-01T00:00:00Z", "until": "2026-04-01T00:00:00Z", **params},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        return [e["summary"] for e in r.json()]

    assert await words(patient_name="maria ROSSI") == [
        "Dr. Paul Klee read Maria Rossi's appointments",
        "Dr. Anna Weber read Maria Rossi's visit note",
    ]
    assert await words(staff_name="weber") == [
        "Dr. Anna Weber read Marco Bianchi's profile",
        "Dr. Anna Weber read Maria Rossi's visit note",
    ]
    assert await words(staff_name="weber", patient_name="maria") == [
        "Dr. Anna Weber read Maria Rossi's visit note"
    ]
    assert await words(patient_name="Maria", until="2026-03-03T00:00:00Z") == [
        "Dr. Anna Weber read Maria Rossi's visit note"
    ]
    assert await words(patient_name="100%_") == []  # wildcards are plain characters
    r = await http.get("/api/v1/audit", params={"patient_name": "x" * 201}, headers=auth)
    assert r.status_code == 422

    # The page: names and days (the viewer's days), the sentences in the table.
    page = await http.get(
        "/admin/audit",
        params={"patient_name": "rossi", "since": "2026-03-05", "until": "2026-03-05"},
        headers=auth,
    )
    assert page.status_code == 200
    assert "Dr. Paul Klee read Maria Rossi&#39;s appointments" in page.text
    assert "visit note" not in page.text and "Marco Bianchi" not in page.text
    assert 'value="rossi"' in page.text
    page = await http.get("/admin/audit", params={"staff_name": "x" * 201}, headers=auth)
    assert page.status_code == 422

    # The patient reads their own trail in words too.
    mine = await http.get("/api/v1/me/audit", headers=await token_for(http, maria))
    assert "Dr. Anna Weber read Maria Rossi's visit note" in [e["summary"] for e in mine.json()]
