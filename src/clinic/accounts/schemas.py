"""Request and response shapes for accounts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from clinic.core.validation import PastDay, Text, TimeZoneName


class _Strict(BaseModel):
    # No model-wide whitespace stripping: a password's spaces are part of it.
    model_config = ConfigDict(extra="forbid")


Name = Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Password = Annotated[Text, Field(min_length=1, max_length=1024)]


class PatientCreate(_Strict):
    name: Name
    email: EmailStr
    password: Password
    date_of_birth: PastDay
    time_zone: TimeZoneName = "UTC"

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
    password: Password
    time_zone: TimeZoneName = "UTC"
    specialty: Annotated[
        Text, StringConstraints(strip_whitespace=True, min_length=2, max_length=100)
    ]
    licence_number: Annotated[
        Text,
        StringConstraints(
            strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9./-]+$"
        ),
    ]
    bio: Text = Field(default="", max_length=5000)


class LoginRequest(_Strict):
    email: Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=254)]
    password: Password


TokenDays = Annotated[int, Field(strict=True, ge=1, le=3650)]
"""A token's lifetime in days; the service bounds it by ``api_token_max_ttl``."""


class TokenCreate(_Strict):
    name: Text = Field(default="api", min_length=1, max_length=100)
    expires_in_days: TokenDays | None = None
    """Unset: ``CLINIC_API_TOKEN_TTL`` (90 days)."""


class TokenLogin(LoginRequest):
    name: Text = Field(default="api", min_length=1, max_length=100)
    expires_in_days: TokenDays | None = None


class PasswordChange(_Strict):
    current_password: Password
    new_password: Password


class TokenPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime
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
    email_verified: bool = True


class PatientPublic(UserPublic):
    date_of_birth: date


class PatientUpdate(_Strict):
    name: Name | None = None
    time_zone: TimeZoneName | None = None


class DoctorPublic(BaseModel):
    id: int
    name: str
    specialty: str
    bio: str
    time_zone: str
    approved: bool
    next_free_slot: datetime | None = None


class LockPublic(BaseModel):
    user_id: int | None
    """None: no account has this email (someone guessed at it)."""
    email: str
    address: str
    locked_until: datetime


class ResetRequest(_Strict):
    email: Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=254)]


class ResetConfirm(_Strict):
    token: Annotated[Text, StringConstraints(min_length=1, max_length=200)]
    new_password: Password


class VerifyEmail(_Strict):
    token: Annotated[Text, StringConstraints(min_length=1, max_length=500)]
