"""Audit records as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AuditRecordPublic(BaseModel):
    id: int
    at: datetime
    actor_id: int | None
    actor_role: str
    actor_name: str | None
    patient_id: int | None
    action: str
    subject: str
    address: str | None
    request_id: str | None
