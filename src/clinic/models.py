"""Every table of the clinic, imported so ``Base.metadata`` is complete (Alembic, tests)."""

from clinic.accounts.models import ApiToken, Doctor, LoginThrottle, Patient, User
from clinic.appointments.models import Appointment, AppointmentEvent, IdempotencyKey
from clinic.core.db import Base
from clinic.scheduling.models import ScheduleOverride, WeeklyHours

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "Appointment",
    "AppointmentEvent",
    "Doctor",
    "IdempotencyKey",
    "LoginThrottle",
    "Patient",
    "ScheduleOverride",
    "User",
    "WeeklyHours",
    "metadata",
]
