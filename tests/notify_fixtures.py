"""Fixtures for the job, email and audit tests: a real SMTP server (aiosmtpd) in the test
process, settings pointing at it with short job timings, and an in-process job worker."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from icalendar import Calendar
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.appointments.models import Appointment
from clinic.core.config import Settings
from clinic.notify.worker import JobWorker
from conftest import free_port


@dataclass
class Sink:
    """What the SMTP server received; ``refuse`` makes it answer 554 to every message,
    ``delay`` holds each message that long before accepting it."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse: bool = False
    delay: float = 0.0
    rcpt_delay: float = 0.0
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse:
            return "554 5.7.1 Refused by the test"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"

    def dedupe_keys(self) -> list[str]:
        with self.lock:
            return [str(m["X-Clinic-Key"]) for m in self.messages]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@dataclass
class SmtpSink:
    host: str
    port: int
    sink: Sink


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpSink("127.0.0.1", port, sink)
    finally:
        controller.stop()


def job_settings(settings: Settings, smtp: SmtpSink | None, **extra: Any) -> Settings:
    """``settings`` with SMTP pointing at the sink and job timings short enough for tests."""
    update: dict[str, Any] = {
        "worker_poll_interval": timedelta(seconds=0.2),
        "worker_heartbeat_interval": timedelta(seconds=0.5),
        "worker_stalled_timeout": timedelta(seconds=2),
        "worker_drain_timeout": timedelta(seconds=2),
        "job_retry_base": timedelta(seconds=0.2),
        "job_max_attempts": 3,
        "jobs_tick": timedelta(seconds=1),
    }
    if smtp is not None:
        update.update(smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none")
    update.update(extra)
    return settings.model_copy(update=update)


@pytest.fixture
def mail_settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return job_settings(settings, smtp, worker_in_process=False)


@pytest.fixture
async def worker(
    mail_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[JobWorker]:
    w = JobWorker(mail_settings, sessions)
    await w.start()
    yield w
    await w.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 15.0,  # noqa: ASYNC109
) -> None:
    """Wait until ``check()`` is true (polling), or fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        await asyncio.sleep(0.05)


async def job_counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Email jobs by status (the periodic sweeps are left out)."""
    async with sessions() as s:
        rows = await s.execute(
            text(
                "SELECT status::text, count(*) FROM procrastinate_jobs"
                " WHERE task_name = 'clinic.notify.send_email' GROUP BY status"
            )
        )
        return {status: int(n) for status, n in rows.all()}


def calendar_of(msg: EmailMessage) -> Any:
    """The VEVENT of the message's text/calendar attachment, and the part itself."""
    for part in msg.iter_attachments():
        if part.get_content_type() == "text/calendar":
            cal = Calendar.from_ical(part.get_content())
            return cal, next(iter(cal.walk("VEVENT"))), part
    raise AssertionError("no text/calendar attachment")


async def insert_appointment(
    sessions: async_sessionmaker[AsyncSession],
    *,
    doctor_id: int,
    patient_id: int,
    starts_at: datetime,
    minutes: int = 30,
    status: str = "booked",
) -> int:
    async with sessions() as s, s.begin():
        a = Appointment(
            doctor_id=doctor_id,
            patient_id=patient_id,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=minutes),
            buffer_ends_at=starts_at + timedelta(minutes=minutes),
            status=status,
            reason="Check-up",
        )
        s.add(a)
        await s.flush()
        return a.id


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)
