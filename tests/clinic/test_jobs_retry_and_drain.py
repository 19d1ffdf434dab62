"""A refused email is retried with backoff a bounded number of times, then kept as failed and
shown to admins; a worker stopped mid-job hands the job back and nothing is lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text

import notify_fixtures
from clinic.appointments import service
from clinic.notify.worker import JobWorker
from factories import make_admin, make_doctor, make_patient, next_weekday_at, token_for
from notify_fixtures import eventually, job_counts, job_settings

# Fixtures shared with the other job and email tests.
smtp = notify_fixtures.smtp


@pytest.fixture
def settings(settings):
    """The app under test runs no worker of its own: the test's worker is the only one."""
    return settings.model_copy(update={"worker_in_process": False})


async def _book(sessions, settings, hour: int):
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    async with sessions() as s:
        view, _ = await service.book_appointment(
            session=s,
            actor=patient,
            doctor_id=doctor.user_id,
            starts_at=next_weekday_at(hour),
            reason="Check-up",
            idempotency_key=None,
        )
    return view.appointment


async def test_refused_mail_is_retried_with_backoff_then_failed_and_listed(
    sessions, settings, smtp, http, app
) -> None:
    smtp.sink.refuse = True
    cfg = job_settings(
        settings,
        smtp,
        worker_in_process=False,
        job_max_attempts=3,
        job_retry_base=timedelta(seconds=0.5),
    )
    appt = await _book(sessions, cfg, 10)
    worker = JobWorker(cfg, sessions)
    await worker.start()
    try:
        await eventually(lambda: _counts_are(sessions, {"failed": 2}), timeout=20)
    finally:
        await worker.stop()
    assert smtp.sink.attempts == 6 and smtp.sink.messages == []  # 3 runs x 2 emails
    async with sessions() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT j.id, j.attempts, array_agg(e.at ORDER BY e.at) FILTER"
                    " (WHERE e.type = 'started') FROM procrastinate_jobs j"
                    " JOIN procrastinate_events e ON e.job_id = j.id"
                    " WHERE j.task_name = 'clinic.notify.send_email' GROUP BY j.id"
                )
            )
        ).all()
    for _, attempts, starts in rows:
        assert attempts == 3 and len(starts) == 3
        first_wait, second_wait = starts[1] - starts[0], starts[2] - starts[1]
        assert first_wait >= timedelta(seconds=0.5) and second_wait >= timedelta(seconds=1.0)

    admin = await make_admin(sessions, cfg)
    auth = await token_for(http, admin)
    page = await http.get("/admin/jobs", headers=auth)
    assert page.status_code == 200
    assert page.text.count("clinic.notify.send_email") == 2
    assert f"booked for appointment {appt.id} to the patient" in page.text
    api = await http.get("/api/v1/admin/jobs", headers=auth)
    assert {j["status"] for j in api.json()} == {"failed"} and len(api.json()) == 2
    patient_auth = await token_for(http, await make_patient(sessions, cfg))
    assert (await http.get("/admin/jobs", headers=patient_auth)).status_code == 403
    assert (await http.get("/api/v1/admin/jobs", headers=patient_auth)).status_code == 403


async def test_worker_drains_on_shutdown_and_loses_no_job(sessions, settings, smtp) -> None:
    smtp.sink.delay = 0.6  # each message takes a while to be accepted
    cfg = job_settings(
        settings,
        smtp,
        worker_in_process=False,
        worker_concurrency=2,
        worker_drain_timeout=timedelta(seconds=0.2),
        job_max_attempts=5,
    )
    for hour in (9, 10, 11):
        await _book(sessions, cfg, hour)  # 6 emails
    first = JobWorker(cfg, sessions)
    await first.start()
    await eventually(lambda: smtp.sink.attempts >= 1)
    await first.stop()  # mid-job: the drain timeout is shorter than one send
    after_first = smtp.sink.count()
    counts = await job_counts(sessions)
    assert counts.get("doing", 0) == 0 and counts.get("failed", 0) == 0
    assert after_first < 6  # there was work left to hand back
    second = JobWorker(cfg, sessions)
    await second.start()
    try:
        await eventually(lambda: _counts_are(sessions, {"succeeded": 6}), timeout=30)
    finally:
        await second.stop()
    keys = smtp.sink.dedupe_keys()
    assert len(keys) == 6 and len(set(keys)) == 6  # each email exactly once


async def _counts_are(sessions, expected: dict[str, int]) -> bool:
    return await job_counts(sessions) == expected


async def test_stopping_an_idle_worker_does_not_wait_out_its_timers(
    sessions, settings, smtp
) -> None:
    # Poll interval and drain timeout of an hour: a stop that waited for either would hang
    # (and the guard below would fail it) instead of returning once the worker is idle.
    hour = timedelta(hours=1)
    cfg = job_settings(settings, smtp, worker_in_process=False)
    cfg = cfg.model_copy(update={"worker_poll_interval": hour, "worker_drain_timeout": hour})
    worker = JobWorker(cfg, sessions)
    await worker.start()
    await asyncio.wait_for(worker.stop(), timeout=300)
