"""The audit trail: who read or changed which patient's data, and when. Its table, and how
every feature appends to it.

Features call :func:`record` (or :func:`record_many`) inside the transaction of the read
or change they describe, after the guard has let the actor through::

    async with session.begin():
        note = ...                       # read or change patient data
        await audit.record(session, actor=actor, patient_id=note.patient_id,
                           action="update", subject=f"visit_note:{note.id}")

The insert runs at once (not at flush), so a failing audit write raises inside that
transaction and the whole request fails: no change without its record. The table is
append-only, enforced by triggers in the database (migration 0002). Reading the trail is
the ``clinic.audit`` feature.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, String, insert, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core import request_context
from clinic.core.db import Base, UTCDateTime


class Principal(Protocol):
    """Who acts (``clinic.accounts.guards.Actor`` is one)."""

    @property
    def user_id(self) -> int: ...

    @property
    def role(self) -> str: ...


class AuditRecord(Base):
    """Who (``actor_id``, ``actor_role``) did what (``action`` on ``subject``) to whose data
    (``patient_id``), when, from which address, in which request."""

    __tablename__ = "audit_records"
    __table_args__ = (
        CheckConstraint("action IN ('read', 'create', 'update', 'delete')", name="action_known"),
        Index("ix_audit_records_patient_at", "patient_id", "at"),
        Index("ix_audit_records_actor_at", "actor_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"), index=True)
    # No foreign keys: the trail outlives the accounts it mentions, and a cascade would
    # have to update or delete records, which the database refuses.
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_role: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))


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


def _row(actor: Principal | None, access: Access) -> dict[str, object]:
    if access.action not in ACTIONS:
        raise ValueError(f"unknown audit action {access.action!r}")
    ctx = request_context.current()
    return {
        "actor_id": actor.user_id if actor is not None else None,
        "actor_role": str(actor.role) if actor is not None else SYSTEM_ROLE,
        "patient_id": access.patient_id,
        "action": access.action,
        "subject": access.subject[:200],
        "address": ctx.address[:64] if ctx.address else None,
        "request_id": ctx.request_id,
    }


async def record(
    session: AsyncSession,
    *,
    actor: Principal | None,
    patient_id: int | None,
    action: Action,
    subject: str,
) -> None:
    """Append one record: ``actor`` (None = the system) did ``action`` to ``subject`` (e.g.
    ``"profile"``, ``"appointment:42"``, ``"visit_note:7"``) of patient ``patient_id``.

    Must be called inside the transaction that reads or changes the data; address and request
    id come from the current request (``clinic.core.request_context``).
    """
    await record_many(session, actor=actor, accesses=[Access(patient_id, action, subject)])


async def record_many(
    session: AsyncSession, *, actor: Principal | None, accesses: Iterable[Access]
) -> None:
    """Append several records in one statement (e.g. a list read touching many patients)."""
    if not session.in_transaction():
        raise RuntimeError("audit.record must run inside the transaction it describes")
    if request_context.current().shadow:
        return  # a mirrored read: the user did not read the record again
    rows = [_row(actor, a) for a in accesses]
    if rows:
        await session.execute(insert(AuditRecord), rows)
