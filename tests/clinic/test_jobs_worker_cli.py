"""``clinic worker``: a separate worker process delivers jobs and drains on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sqlalchemy import func, select

import notify_fixtures
from clinic.appointments import service
from clinic.notify.models import SentEmail
from factories import make_doctor, make_patient, next_weekday_at
from notify_fixtures import eventually

# Fixtures shared with the other job and email tests.
smtp = notify_fixtures.smtp


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clinic", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _sent(sessions) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(SentEmail)) or 0)


async def test_clinic_worker_process_sends_and_stops_on_sigterm(
    sessions, settings, smtp, tmp_path
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    async with sessions() as s:
        await service.book_appointment(
            session=s,
            actor=patient,
            doctor_id=doctor.user_id,
            starts_at=next_weekday_at(10),
            reason="Check-up",
            idempotency_key=None,
        )
    env = {
        **os.environ,
        "CLINIC_DATABASE_URL": settings.database_url,
        "CLINIC_VAR_DIR": str(tmp_path / "var"),
        "CLINIC_SMTP_HOST": smtp.host,
        "CLINIC_SMTP_PORT": str(smtp.port),
        "CLINIC_SMTP_SECURITY": "none",
        "CLINIC_WORKER_POLL_INTERVAL": "PT0.2S",
    }
    proc = _spawn(env)
    try:
        await eventually(lambda: smtp.sink.count() == 2, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    assert b"worker stopped" in out
    assert await _sent(sessions) == 2
