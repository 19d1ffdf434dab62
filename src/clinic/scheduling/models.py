"""A doctor's weekly hours and date overrides, in the doctor's own time zone."""

from __future__ import annotations

from datetime import date, time

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Identity, SmallInteger, String
from sqlalchemy import Time as SATime
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base


class WeeklyHours(Base):
    __tablename__ = "weekly_hours"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        CheckConstraint("start_time < end_time", name="start_before_end"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctors.user_id", ondelete="CASCADE"), index=True
    )
    weekday: Mapped[int] = mapped_column(SmallInteger)
    """0 = Monday … 6 = Sunday."""
    start_time: Mapped[time] = mapped_column(SATime)
    end_time: Mapped[time] = mapped_column(SATime)


class ScheduleOverride(Base):
    __tablename__ = "schedule_overrides"
    __table_args__ = (
        CheckConstraint("kind IN ('off', 'extra')", name="kind_known"),
        CheckConstraint(
            "(start_time IS NULL AND end_time IS NULL AND kind = 'off')"
            " OR (start_time IS NOT NULL AND end_time IS NOT NULL AND start_time < end_time)",
            name="times_valid",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctors.user_id", ondelete="CASCADE"), index=True
    )
    day: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(8))
    start_time: Mapped[time | None] = mapped_column(SATime)
    end_time: Mapped[time | None] = mapped_column(SATime)
