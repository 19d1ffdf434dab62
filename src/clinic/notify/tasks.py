"""The job tasks: what a worker does with each job. Registered on an App by
``clinic.notify.worker.build_app``; each gets the process's :class:`JobEnv` from the job
context."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from procrastinate import JobContext
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.appointments.models import Appointment, Status
from clinic.appointments.notices import facts_from_args
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.notify import sweeps
from clinic.notify.mail import Email, appointment_email, reminder_email, to_message
from clinic.notify.models import SentEmail
from clinic.notify.transport import smtp_close, smtp_send, store_in_outbox
from clinic.web.identity import ClinicPublic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEnv:
    """What tasks need from the process running them."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]

    def now(self) -> datetime:
        """The jobs' clock (``clock_offset`` lets tests and demos advance it)."""
        return utcnow() + self.settings.clock_offset


def env_of(context: JobContext) -> JobEnv:
    env = context.additional_context["clinic"]
    assert isinstance(env, JobEnv)
    return env


def compose(args: dict[str, Any], settings: Settings) -> Email:
    """The email a ``send_email`` job sends: the same bytes on every retry."""
    if args["kind"] == "composed":  # composed by a feature below notify (a review, a reset)
        return Email.from_args(args["email"])
    facts = facts_from_args(args["facts"])
    stamp = datetime.fromisoformat(args["stamp"])
    clinic = ClinicPublic.of(settings)
    if args["kind"] == "reminder":
        return reminder_email(
            facts, rule=args["rule"], mail_from=settings.mail_from, stamp=stamp, clinic=clinic
        )
    previous = args.get("previous_start")
    return appointment_email(
        facts,
        change=args["change"],
        role=args["role"],
        mail_from=settings.mail_from,
        stamp=stamp,
        previous_start=datetime.fromisoformat(previous) if previous else None,
        clinic=clinic,
    )


async def _still_due(session: AsyncSession, email: Email) -> bool:
    if email.starts_at is None:
        return True
    appointment = await session.scalar(
        select(Appointment).where(Appointment.id == email.appointment_id)
    )
    return (
        appointment is not None
        and appointment.status == Status.BOOKED.value
        and appointment.starts_at == datetime.fromisoformat(email.starts_at)
    )


async def deliver(env: JobEnv, email: Email) -> bool:
    """Send ``email`` at most once per dedupe key; True if it was sent now.

    The key is claimed in ``sent_emails`` in the transaction that covers the SMTP
    conversation up to the server's acceptance (QUIT comes after the commit), so a concurrent
    duplicate waits and then finds the key taken, and a failed
    send leaves no key behind (the retry sends again). The one residual window: the process
    dies after the server accepted the message and before the commit; the retry then sends
    it again with the same Message-ID (at-least-once; receivers dedupe on it).
    """
    settings = env.settings
    cancelled = False
    connection: smtplib.SMTP | None = None
    try:
        async with env.sessions() as session, session.begin():
            if not await _still_due(session, email):
                log.info("skipping %s: no longer due", email.dedupe_key)
                return False
            claimed = await session.scalar(
                insert(SentEmail)
                .values(
                    dedupe_key=email.dedupe_key,
                    recipient=email.to,
                    transport="smtp" if settings.smtp_host else "outbox",
                )
                .on_conflict_do_nothing()
                .returning(SentEmail.dedupe_key)
            )
            if claimed is None:
                return False
            if settings.smtp_host is None:
                await store_in_outbox(session, email, settings)
            else:
                msg = to_message(email, mail_from=settings.mail_from)
                send = asyncio.ensure_future(asyncio.to_thread(smtp_send, msg, settings))
                try:
                    connection = await asyncio.shield(send)
                except asyncio.CancelledError:
                    # Aborted at shutdown: the server may already have the message, so finish
                    # the conversation and record it before giving the job back.
                    cancelled = True
                    connection = await send
    finally:
        if connection is not None:  # recorded (or failed to be): now say goodbye
            await asyncio.to_thread(smtp_close, connection)
    if cancelled:
        raise asyncio.CancelledError
    return True


async def send_email(context: JobContext, /, **args: Any) -> None:
    env = env_of(context)
    await deliver(env, compose(args, env.settings))


async def retry_stalled(context: JobContext, env: JobEnv) -> int:
    """Hand the jobs of dead workers (no heartbeat for ``worker_stalled_timeout``) back to
    the queue. Runs in the tick, so whichever worker runs the tick rescues the others."""
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=env.settings.worker_stalled_timeout.total_seconds()
    )
    rescued = 0
    for job in stalled:
        if job.id == context.job.id:
            continue
        try:
            await manager.retry_job(job)
            rescued += 1
        except Exception:  # another worker's tick rescued it first
            log.debug("stalled job %s already handed back", job.id, exc_info=True)
    if rescued:
        log.warning("handed back %d job(s) of stalled workers", rescued)
    return rescued


async def tick(context: JobContext, /, timestamp: int) -> dict[str, int]:
    """The periodic sweep, deferred once per period across every worker: rescue stalled
    jobs, queue due reminders, mark no-shows."""
    env = env_of(context)
    rescued = await retry_stalled(context, env)
    now = env.now()
    async with env.sessions() as session, session.begin():
        reminders = await sweeps.queue_due_reminders(session, settings=env.settings, now=now)
    async with env.sessions() as session, session.begin():
        no_shows = await sweeps.mark_no_shows(session, settings=env.settings, now=now)
    return {"rescued": rescued, "reminders": reminders, "no_shows": len(no_shows)}


async def purge(context: JobContext, /, timestamp: int) -> dict[str, int]:
    """Hourly: revoked tokens, stale throttles and old succeeded jobs (failed ones stay)."""
    env = env_of(context)
    async with env.sessions() as session, session.begin():
        counts = await sweeps.purge(session, settings=env.settings, now=env.now())
    hours = max(1, int(env.settings.purge_after / timedelta(hours=1)))
    await context.app.job_manager.delete_old_jobs(nb_hours=hours, include_failed=False)
    return counts
