"""Request and response shapes for accounts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator


def check_time_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"unknown IANA time zone {value!r} (for example Europe/Berlin)")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


_ZONES: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    return _ZONES


class _Strict(BaseModel):
    # No model-wide whitespace stripping: a password's spaces are part of it.
    model_config = ConfigDict(extra="forbid")


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class PatientCreate(_Strict):
    name: Name
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)
    date_of_birth: date
    time_zone: str = "UTC"

    _tz = field_validator("time_zone")(check_time_zone)

    @field_validator("date_of_birth")
    @classmethod
    def _plausible_birth(cls, value: date) -> date:
        today = date.today()
        if value > today:
            raise ValueError("date of birth is in the future")
        if value.year < today.year - 130:
            raise ValueError("date of birth is more than 130 years ago")
        return value


class DoctorCreate(_Strict):
    name: Name
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)
    time_zone: str = "UTC"
    specialty: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=2, max_length=100)
    ]
    licence_number: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9./-]+$"
        ),
    ]
    bio: str = Field(default="", max_length=5000)

    _tz = field_validator("time_zone")(check_time_zone)


class LoginRequest(_Strict):
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=254)]
    password: str = Field(min_length=1, max_length=1024)


class TokenCreate(_Strict):
    name: str = Field(default="api", min_length=1, max_length=100)


class TokenLogin(LoginRequest):
    name: str = Field(default="api", min_length=1, max_length=100)


class TokenPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str
    """Shown once; only its hash is stored."""


class UserPublic(BaseModel):
    id: int
    name: str
    email: str
    role: str
    time_zone: str


class PatientPublic(UserPublic):
    date_of_birth: date


class PatientUpdate(_Strict):
    name: Name | None = None
    time_zone: str | None = None

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


class DoctorPublic(BaseModel):
    id: int
    name: str
    specialty: str
    bio: str
    time_zone: str
    approved: bool
    next_free_slot: datetime | None = None
