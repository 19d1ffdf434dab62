"""Visit tables: the visit of an appointment, who is connected (with an expiry), what
happened (append-only), the doctor's notes, and signalling bodies too large for NOTIFY."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, UTCDateTime


class Visit(Base):
    """The one video visit of an appointment, created when someone first joins."""

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), unique=True
    )
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set when the doctor admits the patient; a rejoining patient stays admitted."""
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class VisitPresence(Base):
    """Who is connected to a visit now, from which instance. A row is alive while
    ``expires_at`` is in the future; its instance pushes that forward with a heartbeat, so a
    crashed instance's participants disappear when their rows expire."""

    __tablename__ = "visit_presence"
    __table_args__ = (
        CheckConstraint("role IN ('patient', 'doctor')", name="role_known"),
        Index("ix_visit_presence_expires_at", "expires_at"),
    )

    visit_id: Mapped[int] = mapped_column(
        ForeignKey("visits.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    connection_id: Mapped[str] = mapped_column(String(64))
    """The newest connection of this participant; an older one is replaced (closed)."""
    instance_id: Mapped[str] = mapped_column(String(128))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VisitEvent(Base):
    """Append-only history of a visit: joined, admitted, left, disconnected, ended."""

    __tablename__ = "visit_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class VisitNote(Base):
    """A note the doctor writes after the visit. Append-only: an amendment is a new note, so
    who wrote what and when is never lost."""

    __tablename__ = "visit_notes"
    __table_args__ = (CheckConstraint("length(body) BETWEEN 1 AND 20000", name="body_length"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class VisitMessage(Base):
    """A signalling body too large for a NOTIFY payload; the notification carries its id.
    Rows are deleted after a minute (they matter only while in flight)."""

    __tablename__ = "visit_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=text("now()"), index=True
    )
