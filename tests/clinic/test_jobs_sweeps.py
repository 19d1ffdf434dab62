"""The periodic sweeps: no-shows once the join window has closed (in bounded batches, each
recorded in the history and the audit trail) and the purge of what no longer matters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from clinic.appointments.models import Appointment, AppointmentEvent
from clinic.core.audit import AuditRecord
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


async def test_purge_drops_only_what_no_longer_matters(sessions, settings) -> None:
    from sqlalchemy import func, text

    from clinic.accounts.models import ApiToken, LoginThrottle, PasswordReset
    from clinic.appointments.models import IdempotencyKey
    from clinic.appointments.service import book_appointment
    from factories import next_weekday_at

    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    for hour, key in ((9, "old-key"), (10, "new-key")):
        async with sessions() as s:
            await book_appointment(
                session=s,
                actor=patient,
                doctor_id=doctor.user_id,
                starts_at=next_weekday_at(hour),
                reason="x",
                idempotency_key=key,
            )
    now = datetime.now(UTC)
    old = now - settings.purge_after - timedelta(days=1)
    async with sessions() as s, s.begin():
        await s.execute(
            text("UPDATE idempotency_keys SET created_at = :t WHERE key = 'old-key'"), {"t": old}
        )
        s.add_all(
            [
                ApiToken(user_id=patient.user_id, name="old", token_hash="a" * 64, revoked_at=old),
                ApiToken(user_id=patient.user_id, name="live", token_hash="b" * 64),
                ApiToken(user_id=patient.user_id, name="gone", token_hash="c" * 64, expires_at=old),
                ApiToken(
                    user_id=patient.user_id,
                    name="legacy",
                    token_hash="d" * 64,
                    created_at=old - settings.api_token_ttl,
                ),
                ApiToken(  # expired, but not yet purge_after ago
                    user_id=patient.user_id, name="recent", token_hash="e" * 64, expires_at=now
                ),
                PasswordReset(user_id=patient.user_id, token_hash="f" * 64, expires_at=old),
                PasswordReset(
                    user_id=patient.user_id, token_hash="9" * 64, expires_at=now, used_at=old
                ),
                PasswordReset(user_id=patient.user_id, token_hash="8" * 64, expires_at=now),
                LoginThrottle(key="address:old", failures=2, first_failure_at=old),
                LoginThrottle(key="address:now", failures=2, first_failure_at=now),
            ]
        )
    async with sessions() as s, s.begin():
        counts = await sweeps.purge(s, settings=settings, now=now)
    assert counts == {
        "api_tokens": 3,
        "password_resets": 2,
        "login_throttles": 1,
        "idempotency_keys": 1,
    }
    async with sessions() as s:
        assert (await s.scalars(select(IdempotencyKey.key))).all() == ["new-key"]
        assert sorted((await s.scalars(select(ApiToken.name))).all()) == ["live", "recent"]
        assert (await s.scalars(select(PasswordReset.token_hash))).all() == ["8" * 64]
        assert (await s.scalars(select(LoginThrottle.key))).all() == ["address:now"]
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 2
