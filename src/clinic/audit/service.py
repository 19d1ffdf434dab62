"""Reading the audit trail: the admin's search and a patient's own accesses, each record with
the people it names and a sentence. Writing it is ``clinic.core.audit``, called by every
feature in the transaction it describes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import User
from clinic.audit.wording import Who, describe, person
from clinic.core.audit import AuditRecord
from clinic.core.errors import InvalidInput

NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class AuditFilter:
    patient_id: int | None = None
    actor_id: int | None = None
    patient_name: str | None = None
    """Part of the patient's name, any case."""
    staff_name: str | None = None
    """Part of the name of whoever acted, any case."""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record with the people it names, and the sentence that says what happened."""

    record: AuditRecord
    actor: Who
    patient: Who | None
    words: str

    @property
    def actor_name(self) -> str:
        return person(self.actor)

    @property
    def patient_name(self) -> str | None:
        return None if self.patient is None else person(self.patient)


def _like(part: str, field: str) -> str:
    part = " ".join(part.split())
    if len(part) > NAME_MAX:
        raise InvalidInput(f"A name is at most {NAME_MAX} characters.", field=field)
    escaped = part.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    return f"%{escaped}%"


def _named(part: str, field: str) -> Select[int]:
    return select(User.id).where(User.name.ilike(_like(part, field)))


def _not_smoke(user_id: InstrumentedAttribute[int | None]) -> ColumnElement[bool]:
    """The record does not name a smoke-test account there (the deploy's synthetic traffic)."""
    smoke = select(User.id).where(User.id == user_id, User.is_smoke).exists()
    return ~smoke


def _query(f: AuditFilter) -> Select[AuditRecord]:
    if not 1 <= f.limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000.", field="limit")
    stmt = select(AuditRecord).where(
        _not_smoke(AuditRecord.actor_id), _not_smoke(AuditRecord.patient_id)
    )
    if f.patient_id is not None:
        stmt = stmt.where(AuditRecord.patient_id == f.patient_id)
    if f.actor_id is not None:
        stmt = stmt.where(AuditRecord.actor_id == f.actor_id)
    if f.patient_name and f.patient_name.strip():
        stmt = stmt.where(AuditRecord.patient_id.in_(_named(f.patient_name, "patient_name")))
    if f.staff_name and f.staff_name.strip():
        stmt = stmt.where(AuditRecord.actor_id.in_(_named(f.staff_name, "staff_name")))
    if f.since is not None:
        stmt = stmt.where(AuditRecord.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditRecord.at < f.until)
    return stmt.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(f.limit)


async def _entries(session: AsyncSession, records: list[AuditRecord]) -> list[AuditEntry]:
    """The records with their people's names (inside the caller's transaction)."""
    ids = {r.actor_id for r in records} | {r.patient_id for r in records}
    wanted = {i for i in ids if i is not None}
    people: dict[int, tuple[str, str]] = {}
    if wanted:
        rows = await session.execute(
            select(User.id, User.name, User.role).where(User.id.in_(wanted))
        )
        people = {uid: (name, role) for uid, name, role in rows.all()}

    def who(user_id: int | None, role: str | None) -> Who:
        if user_id is None:
            return Who(None, None, role)
        name, known_role = people.get(user_id, (None, role))
        return Who(user_id, name, known_role)

    out = []
    for r in records:
        actor = who(r.actor_id, r.actor_role)
        patient = None if r.patient_id is None else who(r.patient_id, "patient")
        words = describe(actor=actor, patient=patient, action=r.action, subject=r.subject)
        out.append(AuditEntry(r, actor, patient, words))
    return out


async def search(
    *, session: AsyncSession, actor: Actor | None, filters: AuditFilter
) -> list[AuditEntry]:
    """The trail for an admin, newest first, filtered by patient and staff (id or part of the
    name) and time range."""
    guards.require_admin(actor)
    async with session.begin():
        return await _entries(session, list(await session.scalars(_query(filters))))


async def accesses_to_me(
    *, session: AsyncSession, actor: Actor | None, limit: int = 200
) -> list[AuditEntry]:
    """Who accessed the acting patient's record, and when (newest first)."""
    patient = guards.require_patient(actor)
    async with session.begin():
        query = _query(AuditFilter(patient_id=patient.user_id, limit=limit))
        return await _entries(session, list(await session.scalars(query)))
