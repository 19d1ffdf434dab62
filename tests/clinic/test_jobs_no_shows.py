"""The periodic no-show sweep: only booked appointments whose join window has closed, in
bounded batches, each change recorded in the history and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from clinic.appointments.models import Appointment, AppointmentEvent
from clinic.audit.models import AuditRecord
from clinic.notify import sweeps
from factories import make_doctor, make_patient
from visits_fixtures import make_appointment


async def test_no_shows_after_the_window_closes_in_batches(
    sessions, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    doctor = await make_doctor(sessions, settings)
    patients = [await make_patient(sessions, settings) for _ in range(5)]
    closed = settings.visit_join_after + timedelta(hours=1)
    past = [
        await make_appointment(
            sessions, doctor=doctor, patient=p, starts_in=-closed - timedelta(hours=i)
        )
        for i, p in enumerate(patients[:3])
    ]
    # Still inside the join window after its end: not a no-show yet.
    recent = await make_appointment(
        sessions, doctor=doctor, patient=patients[3], starts_in=timedelta(minutes=-40)
    )
    done = await make_appointment(
        sessions,
        doctor=doctor,
        patient=patients[4],
        starts_in=-closed - timedelta(hours=5),
        status="completed",
    )
    monkeypatch.setattr(sweeps, "BATCH", 2)
    now = datetime.now(UTC)
    async with sessions() as s, s.begin():
        first = await sweeps.mark_no_shows(s, settings=settings, now=now)
    async with sessions() as s, s.begin():
        second = await sweeps.mark_no_shows(s, settings=settings, now=now)
    assert len(first) == 2 and len(second) == 1
    async with sessions() as s:
        status = dict((await s.execute(select(Appointment.id, Appointment.status))).all())
        events = (
            await s.scalars(
                select(AppointmentEvent.appointment_id).where(AppointmentEvent.kind == "no_show")
            )
        ).all()
        audited = (
            await s.scalars(select(AuditRecord.subject).where(AuditRecord.actor_id.is_(None)))
        ).all()
    assert [status[i] for i in past] == ["no_show"] * 3
    assert status[recent] == "booked" and status[done] == "completed"
    assert sorted(events) == sorted(past)
    assert sorted(audited) == sorted(f"appointment:{i}" for i in past)
