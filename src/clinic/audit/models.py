"""The audit trail: append-only, enforced by triggers in the database (migration 0002)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from clinic.core.db import Base, UTCDateTime


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
