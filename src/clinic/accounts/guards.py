"""Authorization, in one place. Every service asks these guards before it reads or changes data.

Who may do what:
- a patient sees and changes only their own profile and appointments;
- a doctor sees their own schedule and the appointments booked with them;
- an admin approves doctors and sees everything — except video visits: only the
  appointment's patient and its (approved) doctor join a visit or read its notes.

A resource the actor may not see is reported as missing (404), so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from clinic.accounts.models import Role
from clinic.core.errors import Forbidden, NotAuthenticated, NotFound


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated user a request acts for."""

    user_id: int
    role: Role
    name: str
    email: str
    time_zone: str
    approved: bool = True
    """For doctors: approved by an admin. Always True for other roles."""
    is_smoke: bool = False
    email_verified: bool = True
    """False for a patient who registered and has not yet opened the emailed link."""


class EmailNotVerified(Forbidden):
    code = "email_not_verified"


def authenticated(actor: Actor | None) -> Actor:
    if actor is None:
        raise NotAuthenticated("Log in to continue.")
    return actor


def require_role(actor: Actor | None, *roles: Role) -> Actor:
    actor = authenticated(actor)
    if actor.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise Forbidden(f"This is only for the {allowed} role.")
    return actor


def require_admin(actor: Actor | None) -> Actor:
    return require_role(actor, Role.ADMIN)


def require_patient(actor: Actor | None) -> Actor:
    return require_role(actor, Role.PATIENT)


def require_verified_patient(actor: Actor | None) -> Actor:
    """A patient whose email address is confirmed (booking needs a reachable patient)."""
    patient = require_patient(actor)
    if not patient.email_verified:
        raise EmailNotVerified(
            "Confirm your email address before your first booking: open the link we sent to "
            f"{patient.email}. No email? Send it again from your account page (/account)."
        )
    return patient


def require_doctor(actor: Actor | None) -> Actor:
    return require_role(actor, Role.DOCTOR)


def ensure_may_manage_schedule(actor: Actor | None, doctor_id: int) -> Actor:
    """Only the doctor themself (or an admin) edits or reads a doctor's schedule rules."""
    actor = authenticated(actor)
    if actor.role is Role.ADMIN or (actor.role is Role.DOCTOR and actor.user_id == doctor_id):
        return actor
    raise NotFound("No such doctor schedule.")


def ensure_may_see_appointment(actor: Actor | None, *, patient_id: int, doctor_id: int) -> Actor:
    actor = authenticated(actor)
    if actor.role is Role.ADMIN:
        return actor
    if actor.role is Role.PATIENT and actor.user_id == patient_id:
        return actor
    if actor.role is Role.DOCTOR and actor.user_id == doctor_id:
        return actor
    raise NotFound("No such appointment.")


def ensure_may_see_patient(actor: Actor | None, patient_id: int) -> Actor:
    actor = authenticated(actor)
    if actor.role is Role.ADMIN or actor.user_id == patient_id:
        return actor
    raise NotFound("No such patient.")


class VisitRole(StrEnum):
    PATIENT = "patient"
    DOCTOR = "doctor"

    @property
    def peer(self) -> VisitRole:
        return VisitRole.DOCTOR if self is VisitRole.PATIENT else VisitRole.PATIENT


def participant_role(actor: Actor | None, *, patient_id: int, doctor_id: int) -> VisitRole:
    """The actor's role in the visit of this appointment; refuses everyone else."""
    actor = authenticated(actor)
    if actor.role is Role.PATIENT and actor.user_id == patient_id:
        return VisitRole.PATIENT
    if actor.role is Role.DOCTOR and actor.user_id == doctor_id:
        if not actor.approved:
            raise Forbidden("Your doctor account must be approved before you can hold visits.")
        return VisitRole.DOCTOR
    raise NotFound("No such visit.")


def require_visit_doctor(role: VisitRole, what: str) -> None:
    if role is not VisitRole.DOCTOR:
        raise Forbidden(f"Only the doctor can {what}.")
