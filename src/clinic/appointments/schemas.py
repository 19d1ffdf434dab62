"""Request and response shapes for appointments."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clinic.core.validation import AwareInstant, Id, Text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AppointmentCreate(_Strict):
    doctor_id: Id
    starts_at: AwareInstant
    reason: Text = Field(min_length=1, max_length=2000)


class AppointmentCancel(_Strict):
    reason: Text | None = Field(default=None, max_length=2000)


class AppointmentReschedule(_Strict):
    starts_at: AwareInstant


class AppointmentMark(_Strict):
    status: Literal["completed", "no_show"]


class AppointmentEventPublic(BaseModel):
    kind: str
    at: datetime
    actor_id: int | None
    details: dict[str, Any]


class AppointmentPublic(BaseModel):
    id: int
    doctor_id: int
    doctor_name: str
    patient_id: int
    patient_name: str
    starts_at: datetime
    ends_at: datetime
    status: str
    reason: str
    cancel_reason: str | None
    sequence: int
    created_at: datetime
    updated_at: datetime


class AppointmentDetail(AppointmentPublic):
    history: list[AppointmentEventPublic]
