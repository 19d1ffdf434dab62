"""Request and response shapes for schedules and slots."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinic.core.validation import Day, Integer, WallClock


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeeklyWindowIn(_Strict):
    weekday: Integer = Field(ge=0, le=6, description="0 = Monday … 6 = Sunday")
    start: WallClock
    end: WallClock

    @model_validator(mode="after")
    def _ordered(self) -> WeeklyWindowIn:
        if self.start >= self.end:
            raise ValueError("a window must end after it starts (windows do not cross midnight)")
        return self


class RulesIn(_Strict):
    slot_minutes: Integer = Field(default=30, ge=5, le=480)
    buffer_minutes: Integer = Field(default=0, ge=0, le=240)
    min_notice_minutes: Integer = Field(default=120, ge=0, le=43200)
    horizon_days: Integer = Field(default=90, ge=1, le=730)


class ScheduleIn(_Strict):
    """A doctor's whole weekly schedule and slot rules (replaces the previous one)."""

    weekly: list[WeeklyWindowIn] = Field(max_length=70)
    rules: RulesIn = RulesIn()

    @model_validator(mode="after")
    def _no_overlap(self) -> ScheduleIn:
        by_day: dict[int, list[WeeklyWindowIn]] = {}
        for w in self.weekly:
            by_day.setdefault(w.weekday, []).append(w)
        for windows in by_day.values():
            windows.sort(key=lambda w: w.start)
            for a, b in pairwise(windows):
                if b.start < a.end:
                    raise ValueError(
                        f"windows {a.start:%H:%M}–{a.end:%H:%M} and {b.start:%H:%M}–{b.end:%H:%M}"
                        " overlap on the same day"
                    )
        return self


class OverrideIn(_Strict):
    day: Day
    kind: Literal["off", "extra"]
    start: WallClock | None = None
    end: WallClock | None = None

    @model_validator(mode="after")
    def _times(self) -> OverrideIn:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither (a whole day off)")
        if self.kind == "extra" and self.start is None:
            raise ValueError("extra hours need a start and an end")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("end must be after start")
        return self


class OverridePublic(OverrideIn):
    id: int


class SchedulePublic(BaseModel):
    doctor_id: int
    time_zone: str
    weekly: list[WeeklyWindowIn]
    rules: RulesIn
    overrides: list[OverridePublic]


class OutsideAppointment(BaseModel):
    id: int
    starts_at: datetime
    ends_at: datetime


class ScheduleSaved(SchedulePublic):
    outside_hours: list[OutsideAppointment]
    """Booked appointments that now fall outside the doctor's hours: kept, never cancelled."""


class SlotPublic(BaseModel):
    starts_at: datetime
    ends_at: datetime
    doctor_local: datetime
    """The slot's start in the doctor's time zone (with its UTC offset)."""


class SlotsPublic(BaseModel):
    doctor_id: int
    time_zone: str
    start: datetime
    end: datetime
    slots: list[SlotPublic]
