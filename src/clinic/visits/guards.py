"""Who may take part in a visit: its appointment's patient, and its doctor once approved.
Nobody else, admins included, joins a visit or reads its notes.

These build on ``clinic.accounts.guards`` (the ``Actor``, ``authenticated``) and follow its rule
that a resource the actor may not see is reported as missing.
"""

from __future__ import annotations

from enum import StrEnum

from clinic.accounts.guards import Actor, authenticated
from clinic.accounts.models import Role
from clinic.core.errors import Forbidden, NotFound


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
