"""The email outbox and the keys that make every email and reminder happen once.

procrastinate's own tables (``procrastinate_*``) are created by migration 0002 from its schema
SQL and are not modelled here; ``clinic.core.schema.include_name`` keeps Alembic off them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, UTCDateTime


class OutboxMessage(Base):
    """A rendered email kept in the database instead of sent (no SMTP server configured)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=text("now()"), index=True
    )
    dedupe_key: Mapped[str] = mapped_column(String(200))
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    ics: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    """The whole message as it would have gone over SMTP."""


class SentEmail(Base):
    """One row per email handed to SMTP (or the outbox): a job that finds its key here has
    already done its work and does nothing."""

    __tablename__ = "sent_emails"

    dedupe_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254))
    transport: Mapped[str] = mapped_column(String(16))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class ReminderSent(Base):
    """A reminder rule that fired for an appointment at a given start time (a rescheduled
    appointment is reminded again for its new time, never twice for the same one)."""

    __tablename__ = "reminders_sent"

    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), primary_key=True
    )
    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
