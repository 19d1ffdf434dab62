"""Exactly once with two colours: four app processes (two blue, two green), each with its
own in-process worker, on one database and one SMTP sink. 100 appointments become due for
both reminder rules when the schedule is advanced; one instance is killed with SIGKILL in
the middle of the run. Every (appointment, rule) reminder arrives exactly once."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import notify_fixtures
from conftest import free_port
from factories import make_doctor, make_patient
from notify_fixtures import eventually, insert_appointment

DOCTORS = PATIENTS = 10  # 100 appointments, a Latin square: nobody is double-booked

# Fixtures shared with the other job and email tests.
smtp = notify_fixtures.smtp


def _start(
    settings, smtp, color: str, tmp: Path, offset: timedelta
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp / f"{color}-{port}.log"
    env = {
        **os.environ,
        "CLINIC_DATABASE_URL": settings.database_url,
        "CLINIC_ENVIRONMENT": "test",
        "CLINIC_SECRET_KEY": settings.secret_key,
        "CLINIC_VAR_DIR": str(tmp / f"var-{port}"),
        "BLUEGREEN_COLOR": color,
        "CLINIC_SMTP_HOST": smtp.host,
        "CLINIC_SMTP_PORT": str(smtp.port),
        "CLINIC_SMTP_SECURITY": "none",
        "CLINIC_WORKER_IN_PROCESS": "true",
        "CLINIC_WORKER_CONCURRENCY": "4",
        "CLINIC_WORKER_POLL_INTERVAL": "PT0.5S",
        "CLINIC_WORKER_HEARTBEAT_INTERVAL": "PT0.5S",
        "CLINIC_WORKER_STALLED_TIMEOUT": "PT2S",
        "CLINIC_JOBS_TICK": "PT1S",
        "CLINIC_CLOCK_OFFSET": f"PT{int(offset.total_seconds())}S",
        "CLINIC_DB_POOL_SIZE": "3",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clinic", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}", log


async def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"instance at {url} exited with {proc.returncode}")
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            r = await client.get(url + "/version")
            return r.status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
async def test_reminders_exactly_once_across_two_colours_with_a_killed_worker(
    sessions, settings, smtp, tmp_path
) -> None:
    smtp.sink.rcpt_delay = 0.05  # each send takes a moment, so a kill lands mid-job
    doctors = [await make_doctor(sessions, settings) for _ in range(DOCTORS)]
    patients = [await make_patient(sessions, settings) for _ in range(PATIENTS)]
    base = (datetime.now(UTC) + timedelta(days=3)).replace(second=0, microsecond=0)
    ids = []
    for d, doctor in enumerate(doctors):
        for p, patient in enumerate(patients):
            starts = base + timedelta(minutes=5 * ((d + p) % 10))
            ids.append(
                await insert_appointment(
                    sessions,
                    doctor_id=doctor.user_id,
                    patient_id=patient.user_id,
                    starts_at=starts,
                    minutes=5,
                )
            )
    # Advance the schedule: the instances' job clock stands 5 minutes before the first
    # appointment, when both the 24 h and the 1 h reminders of all 100 are due.
    offset = base - timedelta(minutes=5) - datetime.now(UTC)
    procs = []
    try:
        for color in ("blue", "blue", "green", "green"):
            procs.append(_start(settings, smtp, color, tmp_path, offset))
        for proc, url, _ in procs:
            await eventually(lambda proc=proc, url=url: _ready(url, proc), timeout=30)
        started = time.monotonic()

        await eventually(lambda: smtp.sink.count() >= 30, timeout=30)
        victim = procs[0][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        at_kill = smtp.sink.count()

        expected = {f"appointment:{i}:reminder:{rule}" for i in ids for rule in ("24h", "1h")}

        def unique_keys() -> set[str]:
            return {k.rsplit(":", 1)[0] for k in smtp.sink.dedupe_keys()}

        await eventually(lambda: unique_keys() == expected, timeout=60)
        await eventually(lambda: _queue_empty(sessions), timeout=30)
        await asyncio.sleep(2.0)  # two more ticks: nothing else may arrive
        elapsed = time.monotonic() - started
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    keys = smtp.sink.dedupe_keys()
    per_key = collections.Counter(keys)
    by_message_id = collections.Counter(str(m["Message-ID"]) for m in smtp.sink.messages)
    async with sessions() as s:
        handed_back = await s.scalar(
            text("SELECT count(*) FROM procrastinate_events WHERE type = 'deferred_for_retry'")
        )
        claimed = await s.scalar(text("SELECT count(*) FROM reminders_sent"))
        jobs = (
            await s.execute(
                text(
                    "SELECT status::text, count(*) FROM procrastinate_jobs"
                    " WHERE task_name = 'clinic.notify.send_email' GROUP BY 1"
                )
            )
        ).all()
    duplicates = sum(n - 1 for n in per_key.values())
    print(
        f"\nexactly-once: 4 instances (2 blue, 2 green), 100 appointments x 2 rules;"
        f" killed 1 instance after {at_kill} deliveries;"
        f" jobs handed back from the dead worker: {handed_back};"
        f" deliveries: {len(keys)} raw, {len(per_key)} distinct keys,"
        f" {len(by_message_id)} distinct Message-IDs; raw duplicates: {duplicates};"
        f" reminders_sent rows: {claimed}; email jobs: {dict(jobs)}; {elapsed:.1f} s"
    )
    assert {k.rsplit(":", 1)[0] for k in per_key} == expected
    assert len(per_key) == 200 and len(by_message_id) == 200 and claimed == 200
    assert dict(jobs) == {"succeeded": 200}
    # At-least-once SMTP: a duplicate is possible only for a message the killed worker had
    # handed to the server but not yet recorded (the same Message-ID, deduped by receivers).
    assert duplicates <= 4, per_key.most_common(5)


async def _queue_empty(sessions) -> bool:
    async with sessions() as s:
        left = await s.scalar(
            text(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                " AND task_name = 'clinic.notify.send_email'"
            )
        )
    return left == 0
