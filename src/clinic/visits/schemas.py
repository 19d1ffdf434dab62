"""JSON shapes of the visits API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from clinic.core.validation import Text


class JoinTicketPublic(BaseModel):
    appointment_id: int
    role: str
    token: str
    token_expires_in: int
    """Seconds the token is valid for opening the websocket (fetch a new one to reconnect)."""
    websocket_path: str
    ice_servers: list[dict[str, Any]]
    opens_at: datetime
    closes_at: datetime


class NoteCreate(BaseModel):
    # No min_length: an empty or blank note reaches the service, which refuses it in words
    # ("Write the note first.") rather than with the validator's text.
    body: Text = Field(max_length=20000)


class NotePublic(BaseModel):
    body: str
    author_name: str
    written_at: datetime


class VisitEventPublic(BaseModel):
    kind: str
    at: datetime
    user_id: int | None
    details: dict[str, Any]


class WaitingPublic(BaseModel):
    appointment_id: int
    patient_name: str
    since: datetime
