"""Domain errors as data: one base class, each error with a stable code and an HTTP status.

Services raise these; one handler renders them as ``{"error": {"code", "message"}}`` for the API
and as a message on the page for HTML. A service never raises an HTTP exception.
"""

from __future__ import annotations

from typing import ClassVar


class ClinicError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        """The form field the error belongs to, so a page can show it next to that field."""


class InvalidInput(ClinicError):
    code = "invalid_input"
    status = 422


class NotAuthenticated(ClinicError):
    code = "not_authenticated"
    status = 401


class Forbidden(ClinicError):
    code = "forbidden"
    status = 403


class NotFound(ClinicError):
    code = "not_found"
    status = 404


class Conflict(ClinicError):
    code = "conflict"
    status = 409


class EmailTaken(Conflict):
    code = "email_taken"


class SlotTaken(Conflict):
    code = "slot_taken"


class PatientBusy(Conflict):
    code = "patient_busy"


class SlotUnavailable(ClinicError):
    code = "slot_unavailable"
    status = 422


class IdempotencyKeyReused(ClinicError):
    code = "idempotency_key_reused"
    status = 422


class TooLate(ClinicError):
    code = "too_late"
    status = 422


class InvalidState(Conflict):
    code = "invalid_state"


class TooManyAttempts(ClinicError):
    code = "too_many_attempts"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidCredentials(ClinicError):
    code = "invalid_credentials"
    status = 401


class CsrfFailed(ClinicError):
    code = "csrf_failed"
    status = 403
