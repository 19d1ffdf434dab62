"""Account tables. A user has one role; patients and doctors have a profile row keyed by user id."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, UTCDateTime


class Role(StrEnum):
    PATIENT = "patient"
    DOCTOR = "doctor"
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Emails are stored lower-cased so the unique constraint is case-insensitive.
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        CheckConstraint("role IN ('patient', 'doctor', 'admin')", name="role_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    time_zone: Mapped[str] = mapped_column(String(64))
    is_smoke: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """The synthetic smoke-test accounts: hidden from search and reports."""
    email_verification_pending: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """True from self-registration until the emailed link is opened; a patient cannot book
    meanwhile. Accounts made by seeds, admins and tests start verified."""
    session_generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    """Signed into every session cookie; raising it ends every session started before."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


class Patient(Base):
    __tablename__ = "patients"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    date_of_birth: Mapped[date] = mapped_column(Date)


class Doctor(Base):
    __tablename__ = "doctors"
    __table_args__ = (
        CheckConstraint("slot_minutes BETWEEN 5 AND 480", name="slot_minutes_range"),
        CheckConstraint("buffer_minutes BETWEEN 0 AND 240", name="buffer_minutes_range"),
        CheckConstraint("min_notice_minutes BETWEEN 0 AND 43200", name="notice_range"),
        CheckConstraint("horizon_days BETWEEN 1 AND 730", name="horizon_range"),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    specialty: Mapped[str] = mapped_column(String(100), index=True)
    licence_number: Mapped[str] = mapped_column(String(64), unique=True)
    bio: Mapped[str] = mapped_column(Text, server_default="")
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Slot rules, each with a sensible default.
    slot_minutes: Mapped[int] = mapped_column(Integer, server_default=text("30"))
    buffer_minutes: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    min_notice_minutes: Mapped[int] = mapped_column(Integer, server_default=text("120"))
    horizon_days: Mapped[int] = mapped_column(Integer, server_default=text("90"))


class ApiToken(Base):
    """A bearer token for the JSON API. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """None only for tokens made before expiry existed: they expire ``api_token_ttl`` after
    ``created_at``."""
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasswordReset(Base):
    """A password reset link: single use, expiring; only its token's SHA-256 is stored."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed-login counters per account and per client address, shared by every instance."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_failure_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
