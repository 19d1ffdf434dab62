"""The demo works offline: with no SMTP server, booking puts both emails in the outbox,
which admins (and only admins) read on /admin/outbox."""

from __future__ import annotations

from sqlalchemy import func, select

from clinic.notify.models import OutboxMessage
from factories import make_admin, make_doctor, make_patient, next_weekday_at, token_for
from notify_fixtures import eventually


async def _outbox_size(sessions) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


async def test_booking_fills_the_outbox_read_by_admins_only(http, sessions, settings) -> None:
    assert settings.smtp_host is None and settings.worker_in_process  # the demo's defaults
    doctor = await make_doctor(sessions, settings, name="Dr. Outbox")
    patient = await make_patient(sessions, settings, name="Olive Outbox")
    auth = await token_for(http, patient)
    r = await http.post(
        "/api/v1/appointments",
        json={
            "doctor_id": doctor.user_id,
            "starts_at": next_weekday_at(10).isoformat(),
            "reason": "Check-up",
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    # The app's own in-process worker delivers them.
    await eventually(lambda: _outbox_size_is(sessions, 2), timeout=20)

    admin_auth = await token_for(http, await make_admin(sessions, settings))
    page = await http.get("/admin/outbox", headers=admin_auth)
    assert page.status_code == 200
    assert page.text.count("Appointment booked: ") == 2
    assert patient.email in page.text and doctor.email in page.text
    assert "BEGIN:VCALENDAR" in page.text
    api = await http.get("/api/v1/admin/outbox", headers=admin_auth)
    assert {m["recipient"] for m in api.json()} == {patient.email, doctor.email}

    doctor_auth = await token_for(http, doctor)
    for who in (auth, doctor_auth):
        assert (await http.get("/admin/outbox", headers=who)).status_code == 403
        assert (await http.get("/api/v1/admin/outbox", headers=who)).status_code == 403
    anonymous = await http.get("/admin/outbox")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


async def _outbox_size_is(sessions, n: int) -> bool:
    return await _outbox_size(sessions) == n
