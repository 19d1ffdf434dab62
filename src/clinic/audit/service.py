"""Writing and reading the audit trail.

Other features call :func:`record` (or :func:`record_many`) inside the transaction of the read
or change they describe, after the guard has let the actor through::

    async with session.begin():
        note = ...                       # read or change patient data
        await audit.record(session, actor=actor, patient_id=note.patient_id,
                           action="update", subject=f"visit_note:{note.id}")

The insert runs at once (not at flush), so a failing audit write raises inside that
transaction and the whole request fails: no change without its record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.audit import context
from clinic.audit.models import AuditRecord
from clinic.core.errors import InvalidInput

Action = Literal["read", "create", "update", "delete"]
ACTIONS: tuple[Action, ...] = ("read", "create", "update", "delete")
SYSTEM_ROLE = "system"
"""``actor_role`` of records written by background jobs (``actor_id`` is then None)."""


@dataclass(frozen=True, slots=True)
class Access:
    """One audited access of one patient's data."""

    patient_id: int | None
    action: Action
    subject: str


def _row(actor: Actor | None, access: Access) -> dict[str, object]:
    if access.action not in ACTIONS:
        raise ValueError(f"unknown audit action {access.action!r}")
    ctx = context.current()
    return {
        "actor_id": actor.user_id if actor is not None else None,
        "actor_role": actor.role.value if actor is not None else SYSTEM_ROLE,
        "patient_id": access.patient_id,
        "action": access.action,
        "subject": access.subject[:200],
        "address": ctx.address[:64] if ctx.address else None,
        "request_id": ctx.request_id,
    }


async def record(
    session: AsyncSession,
    *,
    actor: Actor | None,
    patient_id: int | None,
    action: Action,
    subject: str,
) -> None:
    """Append one record: ``actor`` (None = the system) did ``action`` to ``subject`` (e.g.
    ``"profile"``, ``"appointment:42"``, ``"visit_note:7"``) of patient ``patient_id``.

    Must be called inside the transaction that reads or changes the data; address and request
    id come from the current request (``clinic.audit.context``).
    """
    await record_many(session, actor=actor, accesses=[Access(patient_id, action, subject)])


async def record_many(
    session: AsyncSession, *, actor: Actor | None, accesses: Iterable[Access]
) -> None:
    """Append several records in one statement (e.g. a list read touching many patients)."""
    if not session.in_transaction():
        raise RuntimeError("audit.record must run inside the transaction it describes")
    rows = [_row(actor, a) for a in accesses]
    if rows:
        await session.execute(insert(AuditRecord), rows)


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
    from clinic.accounts.models import User

    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    async with session.begin():
        rows = await session.execute(select(User.id, User.name).where(User.id.in_(wanted)))
        return {uid: name for uid, name in rows.all()}
