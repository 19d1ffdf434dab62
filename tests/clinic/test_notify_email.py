"""Booking, cancellation and rescheduling emails, received by a real SMTP server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

import notify_fixtures
from clinic.appointments import service
from clinic.core.errors import PatientBusy
from clinic.notify.models import SentEmail
from factories import make_doctor, make_patient, next_weekday_at
from notify_fixtures import calendar_of, eventually, insert_appointment, job_counts

# Fixtures shared with the other job and email tests.
mail_settings = notify_fixtures.mail_settings
smtp = notify_fixtures.smtp
worker = notify_fixtures.worker


async def _book(sessions, patient, doctor, starts_at):
    async with sessions() as s:
        view, _ = await service.book_appointment(
            session=s,
            actor=patient,
            doctor_id=doctor.user_id,
            starts_at=starts_at,
            reason="Check-up",
            idempotency_key=None,
        )
    return view.appointment


def _by_recipient(messages, address):
    return [m for m in messages if m["To"].addresses[0].addr_spec == address]


async def test_booking_emails_patient_and_doctor_with_calendar_files(
    sessions, mail_settings, smtp, worker
) -> None:
    doctor = await make_doctor(sessions, mail_settings, name="Dr. Ada Lovelace")
    patient = await make_patient(
        sessions, mail_settings, name="Pat Jones", time_zone="America/New_York"
    )
    start = next_weekday_at(10)  # 10:00 in Berlin
    appt = await _book(sessions, patient, doctor, start)
    await eventually(lambda: smtp.sink.count() == 2)

    to_patient = _by_recipient(smtp.sink.messages, patient.email)
    to_doctor = _by_recipient(smtp.sink.messages, doctor.email)
    assert len(to_patient) == 1 and len(to_doctor) == 1
    p, d = to_patient[0], to_doctor[0]
    assert p["From"].addresses[0].addr_spec == "no-reply@clinic.example.org"
    assert p["Message-ID"] == f"<appointment.{appt.id}.v0.booked.patient@clinic.example.org>"
    assert p["Subject"].startswith("Appointment booked: ")
    # Each in their own zone: New York for the patient, Berlin for the doctor.
    assert "(America/New_York, UTC-0" in p["Subject"] and "04:00" in p["Subject"]
    assert "(Europe/Berlin, UTC+0" in d["Subject"] and "10:00" in d["Subject"]
    body = p.get_body(("plain",)).get_content()
    assert "Doctor: Dr. Ada Lovelace" in body and "Length: 30 minutes" in body
    assert "Patient: Pat Jones" in d.get_body(("plain",)).get_content()

    for msg in (p, d):
        cal, event, part = calendar_of(msg)
        assert part.get_param("method") == "REQUEST"
        assert str(cal["METHOD"]) == "REQUEST"
        assert str(event["UID"]) == f"appointment-{appt.id}@clinic.example.org"
        assert int(event["SEQUENCE"]) == 0
        assert event.decoded("DTSTART") == start
        assert event.decoded("DTSTART").utcoffset() == timedelta(0)
        assert event.decoded("DTEND") == start + timedelta(minutes=30)
        raw = part.get_content()
        assert f"DTSTART:{start:%Y%m%dT%H%M%S}Z" in raw.replace("\r\n", "\n")


async def test_cancel_sends_method_cancel_with_the_next_sequence(
    sessions, mail_settings, smtp, worker
) -> None:
    doctor = await make_doctor(sessions, mail_settings)
    patient = await make_patient(sessions, mail_settings)
    appt = await _book(sessions, patient, doctor, next_weekday_at(11))
    await eventually(lambda: smtp.sink.count() == 2)
    async with sessions() as s:
        await service.cancel_appointment(
            session=s, actor=patient, appointment_id=appt.id, reason=None, settings=mail_settings
        )
    await eventually(lambda: smtp.sink.count() == 4)
    cancels = [m for m in smtp.sink.messages if m["Subject"].startswith("Appointment cancelled")]
    assert {m["To"].addresses[0].addr_spec for m in cancels} == {patient.email, doctor.email}
    for msg in cancels:
        cal, event, part = calendar_of(msg)
        assert str(cal["METHOD"]) == "CANCEL" and part.get_param("method") == "CANCEL"
        assert str(event["STATUS"]) == "CANCELLED"
        assert int(event["SEQUENCE"]) == 1
        assert str(event["UID"]) == f"appointment-{appt.id}@clinic.example.org"


async def test_reschedule_sends_the_new_times(sessions, mail_settings, smtp, worker) -> None:
    doctor = await make_doctor(sessions, mail_settings)
    patient = await make_patient(sessions, mail_settings)
    old, new = next_weekday_at(9), next_weekday_at(14)
    appt = await _book(sessions, patient, doctor, old)
    async with sessions() as s:
        await service.reschedule_appointment(
            session=s, actor=patient, appointment_id=appt.id, starts_at=new, settings=mail_settings
        )
    await eventually(lambda: smtp.sink.count() == 4)
    moved = [m for m in smtp.sink.messages if m["Subject"].startswith("Appointment moved")]
    assert len(moved) == 2, [m["Subject"] for m in smtp.sink.messages]
    for msg in moved:
        _, event, _ = calendar_of(msg)
        assert event.decoded("DTSTART") == new and int(event["SEQUENCE"]) == 1
        assert "Before: " in msg.get_body(("plain",)).get_content()


async def test_a_booking_rolled_back_by_a_conflict_sends_nothing(
    sessions, mail_settings, smtp, worker
) -> None:
    doctor_a = await make_doctor(sessions, mail_settings)
    doctor_b = await make_doctor(sessions, mail_settings)
    patient = await make_patient(sessions, mail_settings)
    start = next_weekday_at(10)
    # The patient already has an appointment then (written directly, so no email): the slot
    # check for doctor B passes and the database's exclusion constraint rolls the booking back.
    await insert_appointment(
        sessions, doctor_id=doctor_a.user_id, patient_id=patient.user_id, starts_at=start
    )
    with pytest.raises(PatientBusy):
        await _book(sessions, patient, doctor_b, start)
    assert await job_counts(sessions) == {}
    # And a race: two patients for one slot, one wins; only the winner's two emails go out.
    other = await make_patient(sessions, mail_settings)
    third = await make_patient(sessions, mail_settings)
    slot = next_weekday_at(15)
    results = await asyncio.gather(
        _book(sessions, other, doctor_b, slot),
        _book(sessions, third, doctor_b, slot),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    await eventually(lambda: smtp.sink.count() == 2)
    await asyncio.sleep(1.0)  # anything else would have arrived by now
    assert smtp.sink.count() == 2
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(SentEmail)) == 2
    await eventually(lambda: _jobs_done(sessions))
    assert await job_counts(sessions) == {"succeeded": 2}


async def test_no_smtp_server_keeps_the_mail_in_the_outbox_once(sessions, settings, smtp) -> None:
    from clinic.notify.worker import JobWorker
    from notify_fixtures import job_settings

    offline = job_settings(settings, None, worker_in_process=False)
    doctor = await make_doctor(sessions, offline)
    patient = await make_patient(sessions, offline)
    appt = await _book(sessions, patient, doctor, next_weekday_at(13))
    w = JobWorker(offline, sessions)
    await w.start()
    try:
        await eventually(lambda: _outbox_count(sessions, 2))
    finally:
        await w.stop()
    assert smtp.sink.count() == 0
    async with sessions() as s:
        from clinic.notify.models import OutboxMessage

        rows = list(await s.scalars(select(OutboxMessage).order_by(OutboxMessage.recipient)))
    assert {r.recipient for r in rows} == {patient.email, doctor.email}
    assert all(f"appointment-{appt.id}@" in (r.ics or "") for r in rows)
    assert all("Content-Type: text/calendar" in r.raw for r in rows)
    assert datetime.now(UTC) - rows[0].created_at < timedelta(minutes=1)


async def _outbox_count(sessions, n: int) -> bool:
    from clinic.notify.models import OutboxMessage

    async with sessions() as s:
        return await s.scalar(select(func.count()).select_from(OutboxMessage)) == n


async def _jobs_done(sessions) -> bool:
    counts = await job_counts(sessions)
    return "todo" not in counts and "doing" not in counts
