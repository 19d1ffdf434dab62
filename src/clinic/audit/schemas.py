"""Audit records as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AuditRecordPublic(BaseModel):
    id: int
    at: datetime
    summary: str
    """The record in words: "Dr. Anna Weber read Maria Rossi's visit note"."""
    actor_id: int | None
    actor_role: str
    actor_name: str | None
    patient_id: int | None
    patient_name: str | None
    action: str
    subject: str
    address: str | None
    request_id: str | None
