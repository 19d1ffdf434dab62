"""Appointments, their change history and booking idempotency keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, UTCDateTime


class Status(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("starts_at < ends_at", name="starts_before_ends"),
        CheckConstraint("ends_at <= buffer_ends_at", name="buffer_after_end"),
        # A text column with a CHECK, not a PostgreSQL enum: adding a status later is an
        # expand-only change (widen the CHECK) that the previous release tolerates.
        CheckConstraint(
            "status IN ('booked', 'cancelled', 'completed', 'no_show')", name="status_known"
        ),
        # The guarantee itself: no two active appointments of one doctor overlap (buffer
        # included), nor of one patient, whatever the code does and on every instance.
        ExcludeConstraint(
            ("doctor_id", "="),
            (func.tstzrange(text("starts_at"), text("buffer_ends_at")), "&&"),
            name="appointments_doctor_no_overlap",
            using="gist",
            where="status <> 'cancelled'",
        ),
        ExcludeConstraint(
            ("patient_id", "="),
            (func.tstzrange(text("starts_at"), text("ends_at")), "&&"),
            name="appointments_patient_no_overlap",
            using="gist",
            where="status <> 'cancelled'",
        ),
        Index("ix_appointments_doctor_starts", "doctor_id", "starts_at"),
        Index("ix_appointments_patient_starts", "patient_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("doctors.user_id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.user_id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    buffer_ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'booked'"))
    reason: Mapped[str] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    sequence: Mapped[int] = mapped_column(server_default=text("0"))
    """Bumped on every change (the iCalendar SEQUENCE)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class AppointmentEvent(Base):
    """Append-only history of an appointment: booked, rescheduled, cancelled, completed."""

    __tablename__ = "appointment_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class IdempotencyKey(Base):
    """A booking request's ``Idempotency-Key``: a retry returns the same appointment."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
