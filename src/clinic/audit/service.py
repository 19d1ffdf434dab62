"""Reading the audit trail: the admin's search and a patient's own accesses. Writing it is
``clinic.core.audit``, called by every feature in the transaction it describes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import User
from clinic.core.audit import AuditRecord
from clinic.core.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class AuditFilter:
    patient_id: int | None = None
    actor_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200


def _query(f: AuditFilter) -> Select[AuditRecord]:
    if not 1 <= f.limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000.", field="limit")
    stmt = select(AuditRecord)
    if f.patient_id is not None:
        stmt = stmt.where(AuditRecord.patient_id == f.patient_id)
    if f.actor_id is not None:
        stmt = stmt.where(AuditRecord.actor_id == f.actor_id)
    if f.since is not None:
        stmt = stmt.where(AuditRecord.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditRecord.at < f.until)
    return stmt.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(f.limit)


async def search(
    *, session: AsyncSession, actor: Actor | None, filters: AuditFilter
) -> list[AuditRecord]:
    """The trail for an admin, newest first, filtered by patient, actor and time range."""
    guards.require_admin(actor)
    async with session.begin():
        return list(await session.scalars(_query(filters)))


async def accesses_to_me(
    *, session: AsyncSession, actor: Actor | None, limit: int = 200
) -> list[AuditRecord]:
    """Who accessed the acting patient's record, and when (newest first)."""
    patient = guards.require_patient(actor)
    async with session.begin():
        return list(
            await session.scalars(_query(AuditFilter(patient_id=patient.user_id, limit=limit)))
        )


async def actor_names(*, session: AsyncSession, ids: Iterable[int | None]) -> dict[int, str]:
    """Display names of the actors in a page of records."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    async with session.begin():
        rows = await session.execute(select(User.id, User.name).where(User.id.in_(wanted)))
        return {uid: name for uid, name in rows.all()}
