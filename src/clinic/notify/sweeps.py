"""The periodic work, as plain use cases on a session (the job tasks call these).

Each is safe to run twice at once: the unique keys (``reminders_sent``) and the conditional
updates make a second run find nothing left to do.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Interval, and_, delete, exists, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts.models import ApiToken, LoginThrottle, PasswordReset
from clinic.appointments.models import Appointment, AppointmentEvent, IdempotencyKey, Status
from clinic.appointments.notices import appointment_facts, facts_args
from clinic.core import audit, jobs
from clinic.core.config import Settings
from clinic.notify.mail import rule_name
from clinic.notify.models import ReminderSent

BATCH = 500


async def queue_due_reminders(session: AsyncSession, *, settings: Settings, now: datetime) -> int:
    """For every reminder rule now due, claim (appointment, rule, start) in ``reminders_sent``
    and enqueue the patient's email, both in this one transaction. Returns how many.

    Due: the appointment is booked, starts after ``now`` and at most ``offset`` after it, and
    its current time was set before the reminder moment (a booking or move made inside the
    window got its own email instead).
    """
    queued = 0
    for offset in settings.reminder_offsets:
        rule = rule_name(offset)
        already = exists().where(
            ReminderSent.appointment_id == Appointment.id,
            ReminderSent.rule == rule,
            ReminderSent.starts_at == Appointment.starts_at,
        )
        # Lock the rows so a concurrent cancel waits for this transaction (and a cancelled
        # appointment is then skipped by the send job's own check); skip rows being changed:
        # the next tick sees them.
        candidates = list(
            await session.scalars(
                select(Appointment)
                .where(
                    Appointment.status == Status.BOOKED.value,
                    Appointment.starts_at > now,
                    Appointment.starts_at <= now + offset,
                    Appointment.updated_at <= Appointment.starts_at - literal(offset, Interval()),
                    ~already,
                )
                .order_by(Appointment.starts_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        for appointment in candidates:
            claimed = await session.scalar(
                insert(ReminderSent)
                .values(appointment_id=appointment.id, rule=rule, starts_at=appointment.starts_at)
                .on_conflict_do_nothing()
                .returning(ReminderSent.appointment_id)
            )
            if claimed is None:
                continue
            facts, smoke = await appointment_facts(session, appointment)
            if smoke:
                continue
            await jobs.defer(
                session,
                jobs.SEND_EMAIL,
                {
                    "kind": "reminder",
                    "facts": facts_args(facts),
                    "rule": rule,
                    "stamp": now.isoformat(),
                },
            )
            queued += 1
    return queued


async def mark_no_shows(session: AsyncSession, *, settings: Settings, now: datetime) -> list[int]:
    """Booked appointments whose join window has closed become no-shows (an attended visit
    ends as completed, so it is no longer booked by then). At most BATCH per tick, so a
    backlog (after downtime) is worked off over a few ticks instead of one long lock."""
    due = (
        select(Appointment.id)
        .where(
            Appointment.status == Status.BOOKED.value,
            Appointment.ends_at < now - settings.visit_join_after,
        )
        .order_by(Appointment.ends_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            update(Appointment)
            .where(Appointment.id.in_(due))
            .values(status=Status.NO_SHOW.value, sequence=Appointment.sequence + 1, updated_at=now)
            .returning(Appointment.id, Appointment.patient_id)
            .execution_options(synchronize_session=False),
        )
    ).all()
    if rows:
        session.add_all(
            AppointmentEvent(
                appointment_id=aid,
                kind=Status.NO_SHOW.value,
                actor_id=None,
                details={"by": "system"},
            )
            for aid, _ in rows
        )
        await session.flush()
        await audit.record_many(
            session,
            actor=None,
            accesses=[audit.Access(pid, "update", f"appointment:{aid}") for aid, pid in rows],
        )
    return [aid for aid, _ in rows]


async def purge(session: AsyncSession, *, settings: Settings, now: datetime) -> dict[str, int]:
    """Drop API tokens revoked or expired, password reset links expired, login throttles and
    booking idempotency keys that no longer matter: each ``purge_after`` past the moment it
    stopped working (a retry comes within seconds; after that the row is history)."""
    cutoff = now - settings.purge_after
    tokens = await session.execute(
        delete(ApiToken).where(
            or_(
                ApiToken.revoked_at < cutoff,
                ApiToken.expires_at < cutoff,
                # made before expiry existed: they stop api_token_ttl after creation
                and_(
                    ApiToken.expires_at.is_(None),
                    ApiToken.created_at < cutoff - settings.api_token_ttl,
                ),
            )
        )
    )
    resets = await session.execute(
        delete(PasswordReset).where(
            or_(PasswordReset.expires_at < cutoff, PasswordReset.used_at < cutoff)
        )
    )
    throttles = await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.first_failure_at < now - settings.login_lockout,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    )
    keys = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return {
        "api_tokens": int(getattr(tokens, "rowcount", 0) or 0),
        "password_resets": int(getattr(resets, "rowcount", 0) or 0),
        "login_throttles": int(getattr(throttles, "rowcount", 0) or 0),
        "idempotency_keys": int(getattr(keys, "rowcount", 0) or 0),
    }
