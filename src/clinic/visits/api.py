"""JSON routes for visits, and the signalling websocket."""

from __future__ import annotations

from fastapi import APIRouter, status

from clinic.accounts.deps import CurrentActor
from clinic.core.validation import Id
from clinic.visits import service, signalling
from clinic.visits.schemas import (
    JoinTicketPublic,
    NoteCreate,
    NotePublic,
    VisitEventPublic,
    WaitingPublic,
)
from clinic.web.deps import Session, SettingsDep
from clinic.web.errors import ERROR_RESPONSES

router = APIRouter(tags=["visits"], responses=ERROR_RESPONSES)
router.include_router(signalling.router)

PREFIX = "/api/v1/visits"


@router.get(f"{PREFIX}/waiting")
async def waiting(actor: CurrentActor, session: Session) -> list[WaitingPublic]:
    """The doctor's patients waiting to be admitted now."""
    rows = await service.waiting_patients(session=session, actor=actor)
    return [
        WaitingPublic(appointment_id=w.appointment_id, patient_name=w.patient_name, since=w.since)
        for w in rows
    ]


@router.get(f"{PREFIX}/{{appointment_id}}/join")
async def join(
    appointment_id: Id, actor: CurrentActor, session: Session, settings: SettingsDep
) -> JoinTicketPublic:
    """A join token and ICE servers, inside the join window only (else 409 with the times)."""
    ticket = await service.join_ticket(
        session=session, actor=actor, appointment_id=appointment_id, settings=settings
    )
    return JoinTicketPublic(
        appointment_id=ticket.appointment_id,
        role=ticket.role.value,
        token=ticket.token,
        token_expires_in=int(ticket.token_expires_in.total_seconds()),
        websocket_path=ticket.websocket_path,
        ice_servers=ticket.ice_servers,
        opens_at=ticket.window.opens_at,
        closes_at=ticket.window.closes_at,
    )


@router.get(f"{PREFIX}/{{appointment_id}}/notes")
async def notes(appointment_id: Id, actor: CurrentActor, session: Session) -> list[NotePublic]:
    views = await service.visit_notes(session=session, actor=actor, appointment_id=appointment_id)
    return [
        NotePublic(body=n.body, author_name=n.author_name, written_at=n.written_at) for n in views
    ]


@router.post(f"{PREFIX}/{{appointment_id}}/notes", status_code=status.HTTP_201_CREATED)
async def write_note(
    appointment_id: Id, data: NoteCreate, actor: CurrentActor, session: Session
) -> NotePublic:
    """The doctor's note, after the visit has ended."""
    n = await service.write_note(
        session=session, actor=actor, appointment_id=appointment_id, body=data.body
    )
    return NotePublic(body=n.body, author_name=n.author_name, written_at=n.written_at)


@router.get(f"{PREFIX}/{{appointment_id}}/events")
async def events(
    appointment_id: Id, actor: CurrentActor, session: Session
) -> list[VisitEventPublic]:
    rows = await service.visit_events(session=session, actor=actor, appointment_id=appointment_id)
    return [
        VisitEventPublic(kind=e.kind, at=e.at, user_id=e.user_id, details=e.details) for e in rows
    ]
