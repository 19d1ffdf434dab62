"""The patient's side of an appointment: upcoming, past and cancelled lists; cancelling only
after confirming; the cut-off explained with the clinic's phone; the calendar file for the
patient and doctor only; emails in words, not ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from icalendar import Calendar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_pages import book_directly, csrf_of, log_in

from clinic.accounts.guards import Actor
from clinic.appointments.models import Appointment
from clinic.appointments.notices import AppointmentFacts, Party
from clinic.notify.mail import appointment_email, reminder_email, uid
from clinic.web.identity import ClinicPublic
from factories import make_admin, make_doctor, make_patient, next_weekday_at


async def _write(
    sessions: async_sessionmaker[AsyncSession],
    doctor: Actor,
    patient: Actor,
    starts_at: datetime,
    status: str = "booked",
) -> int:
    async with sessions() as s, s.begin():
        appointment = Appointment(
            doctor_id=doctor.user_id,
            patient_id=patient.user_id,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=30),
            buffer_ends_at=starts_at + timedelta(minutes=30),
            status=status,
            reason="test",
        )
        s.add(appointment)
        await s.flush()
        return appointment.id


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start : end if end != -1 else len(page)]


async def test_upcoming_past_and_cancelled_are_separate_lists(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    now = datetime.now(UTC).replace(microsecond=0)
    coming = await _write(sessions, doctor, patient, now + timedelta(days=2))
    done = await _write(sessions, doctor, patient, now - timedelta(days=2), status="completed")
    called_off = await _write(sessions, doctor, patient, now + timedelta(days=3), "cancelled")
    await log_in(http, patient.email)
    page = (await http.get("/appointments")).text
    upcoming, past = _section(page, "Upcoming"), _section(page, "Past")
    cancelled = _section(page, "Cancelled")
    assert f"/appointments/{coming}" in upcoming
    assert f"/appointments/{done}" not in upcoming and f"/appointments/{done}" in past
    assert f"/appointments/{called_off}" not in upcoming + past
    assert f"/appointments/{called_off}" in cancelled and "status-cancelled" in cancelled


async def test_cancel_asks_for_confirmation_first(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appointment_id = await book_directly(sessions, patient, doctor, next_weekday_at(9), "Rash")
    await log_in(http, patient.email)
    detail = await http.get(f"/appointments/{appointment_id}")
    assert f'href="/appointments/{appointment_id}/cancel"' in detail.text
    confirm = await http.get(f"/appointments/{appointment_id}/cancel")
    assert confirm.status_code == 200 and "Cancel this appointment?" in confirm.text
    assert 'name="confirm" value="yes"' in confirm.text and "No, keep it" in confirm.text
    # a post without the confirmation (an old form, a stray click) only asks
    r = await http.post(
        f"/appointments/{appointment_id}/cancel",
        data={"csrf_token": csrf_of(confirm.text), "reason": "Better"},
    )
    assert r.status_code == 200 and "Cancel this appointment?" in r.text
    assert ">Better</textarea>" in r.text
    async with sessions() as s:
        assert (await s.get(Appointment, appointment_id)).status == "booked"  # type: ignore[union-attr]
    r = await http.post(
        f"/appointments/{appointment_id}/cancel",
        data={"csrf_token": csrf_of(confirm.text), "reason": "Better", "confirm": "yes"},
    )
    assert r.status_code == 303
    async with sessions() as s:
        assert (await s.get(Appointment, appointment_id)).status == "cancelled"  # type: ignore[union-attr]
    # nothing left to confirm: the page says it is cancelled
    again = await http.get(f"/appointments/{appointment_id}/cancel")
    assert (
        again.status_code == 303 and again.headers["location"] == f"/appointments/{appointment_id}"
    )


async def test_inside_the_cut_off_the_page_gives_the_clinics_phone_not_a_form(
    http, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    appointment_id = await _write(sessions, doctor, patient, soon)
    await log_in(http, patient.email)
    page = await http.get(f"/appointments/{appointment_id}")
    assert "can no longer be cancelled or moved online" in page.text
    assert settings.clinic_phone in page.text.split('id="too-late"')[1].split("</section>")[0]
    assert f'action="/appointments/{appointment_id}/reschedule"' not in page.text
    assert f'href="/appointments/{appointment_id}/cancel"' not in page.text
    r = await http.post(
        f"/appointments/{appointment_id}/cancel",
        data={"csrf_token": csrf_of(page.text), "confirm": "yes"},
    )
    assert r.status_code == 422 and 'id="cancel-error"' in r.text
    assert "hours before they start" in r.text and settings.clinic_phone in r.text


async def test_the_doctor_may_still_cancel_inside_the_cut_off(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    appointment_id = await _write(sessions, doctor, patient, soon)
    await log_in(http, doctor.email)
    page = await http.get(f"/appointments/{appointment_id}")
    assert f'href="/appointments/{appointment_id}/cancel"' in page.text
    confirm = await http.get(f"/appointments/{appointment_id}/cancel")
    r = await http.post(
        f"/appointments/{appointment_id}/cancel",
        data={"csrf_token": csrf_of(confirm.text), "confirm": "yes"},
    )
    assert r.status_code == 422 and "Give a reason for the patient." in r.text
    assert "Cancel this appointment?" in r.text  # still on the confirmation step


async def _ics(http: httpx.AsyncClient, appointment_id: int) -> httpx.Response:
    return await http.get(f"/appointments/{appointment_id}/calendar.ics")


async def test_the_calendar_file_is_for_the_patient_and_doctor_only(
    app, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings, name="Dr. Ada Lovelace")
    patient = await make_patient(sessions, settings)
    appointment_id = await book_directly(sessions, patient, doctor, next_weekday_at(9), "Rash")
    for owner in (patient, doctor):
        async with app.client() as http:
            await log_in(http, owner.email)
            page = await http.get(f"/appointments/{appointment_id}")
            assert f'href="/appointments/{appointment_id}/calendar.ics"' in page.text
            r = await _ics(http, appointment_id)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/calendar")
            assert "attachment" in r.headers["content-disposition"]
            event = Calendar.from_ical(r.text).walk("VEVENT")[0]
            assert str(event["UID"]) == uid(appointment_id, "clinic.example.org")
            assert int(event["SEQUENCE"]) == 0
            assert event.decoded("DTSTART") == next_weekday_at(9)
    # the attacker's side: another patient, another doctor, an admin, nobody
    outsiders = [
        await make_patient(sessions, settings),
        await make_doctor(sessions, settings),
        await make_admin(sessions, settings),
    ]
    for outsider in outsiders:
        async with app.client() as http:
            await log_in(http, outsider.email)
            r = await _ics(http, appointment_id)
            assert r.status_code == 404, outsider.role
            assert "BEGIN:VCALENDAR" not in r.text and "Rash" not in r.text
            assert (await _ics(http, appointment_id + 1000)).status_code == 404
    async with app.client() as http:
        r = await _ics(http, appointment_id)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


FACTS = AppointmentFacts(
    id=3,
    sequence=0,
    starts_at=datetime(2026, 3, 3, 8, 30, tzinfo=UTC),
    ends_at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC),
    doctor=Party("Dr. Anna Weber", "anna@example.org", "Europe/Berlin"),
    patient=Party("Maria Rossi", "maria@example.org", "America/New_York"),
)
CLINIC = ClinicPublic(
    name="Lakeside Clinic",
    address="1 Lake Road, Springfield",
    phone="+1 555 0100",
    emergency_notice="In an emergency call 911.",
)


def test_emails_give_date_time_and_doctor_in_words() -> None:
    stamp = datetime(2026, 3, 1, tzinfo=UTC)
    to_patient = appointment_email(
        FACTS, change="booked", role="patient", mail_from="x@c.org", stamp=stamp, clinic=CLINIC
    ).body
    assert "Date: Tuesday 3 March 2026" in to_patient
    assert "Time: 03:30–04:00 (America/New_York, UTC-05:00)" in to_patient
    assert "Doctor: Dr. Anna Weber" in to_patient
    to_doctor = appointment_email(
        FACTS, change="booked", role="doctor", mail_from="x@c.org", stamp=stamp, clinic=CLINIC
    ).body
    assert "Time: 09:30–10:00 (Europe/Berlin, UTC+01:00)" in to_doctor
    assert "Doctor: Dr. Anna Weber" in to_doctor and "Patient: Maria Rossi" in to_doctor
    reminder = reminder_email(
        FACTS, rule="24h", mail_from="x@c.org", stamp=stamp, clinic=CLINIC
    ).body
    for body in (to_patient, to_doctor, reminder):
        assert "Reference" not in body and "version" not in body and "appointment 3" not in body
        assert "Lakeside Clinic" in body and "Phone: +1 555 0100" in body
        assert "In an emergency call 911." in body
