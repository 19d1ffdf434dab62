"""An audit record in words: "Dr. Anna Weber read Maria Rossi's visit note". Pure: the names
come from the caller."""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_NAME = "The clinic (automatic)"

_VERBS = {"read": "read", "create": "created", "update": "changed", "delete": "deleted"}

# subject kind (the part before the first ':') -> (what it is, the verb for "create")
_SUBJECTS: dict[str, tuple[str, str | None]] = {
    "profile": ("profile", "created"),
    "appointments": ("appointments", None),
    "appointment": ("appointment", "booked"),
    "visit_note": ("visit note", "wrote"),
    "visit_notes": ("visit note", None),
}


@dataclass(frozen=True, slots=True)
class Who:
    """A person named in a record (None fields: unknown, e.g. an account since removed)."""

    user_id: int | None
    name: str | None
    role: str | None


def person(who: Who) -> str:
    """How a record names someone: doctors with their title, the system as the clinic."""
    if who.user_id is None:
        return SYSTEM_NAME
    name = who.name or f"User {who.user_id}"
    if who.role == "doctor" and not name.lower().startswith(("dr ", "dr.")):
        return f"Dr. {name}"
    return name


def _thing(subject: str) -> tuple[str, str | None]:
    kind = subject.split(":", 1)[0]
    return _SUBJECTS.get(kind, (kind.replace("_", " "), None))


def describe(*, actor: Who, patient: Who | None, action: str, subject: str) -> str:
    """One sentence for one record, e.g. "Dr. Anna Weber read Maria Rossi's visit note"."""
    thing, create_verb = _thing(subject)
    verb = create_verb if action == "create" and create_verb else _VERBS.get(action, action)
    if patient is None or patient.user_id is None:
        return f"{person(actor)} {verb} {thing}"
    if actor.user_id == patient.user_id:
        return f"{person(actor)} {verb} their own {thing}"
    return f"{person(actor)} {verb} {person(patient)}'s {thing}"
