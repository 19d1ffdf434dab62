"""Visit use cases: the join ticket, opening a signalling connection, the waiting room, ending
the visit (which completes the appointment), visit notes and the visit's history.

State that must survive an instance (admission, end, presence) lives in the database, never in
an instance's memory: a participant who reconnects to another instance or colour resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from clinic.accounts.guards import Actor, VisitRole, participant_role, require_visit_doctor
from clinic.accounts.models import User
from clinic.appointments.models import Appointment, AppointmentEvent, Status
from clinic.core import audit
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.core.errors import ClinicError, InvalidInput, InvalidState, NotAuthenticated, NotFound
from clinic.core.wallclock import local_text
from clinic.visits import tokens
from clinic.visits.models import Visit, VisitEvent, VisitNote, VisitPresence
from clinic.visits.window import JoinWindow, WindowState, join_window

NOTE_MAX = 20000


class OutsideJoinWindow(ClinicError):
    code = "outside_join_window"
    status = 409

    def __init__(self, message: str, *, window: JoinWindow) -> None:
        super().__init__(message)
        self.window = window


class VisitOver(ClinicError):
    code = "visit_over"
    status: ClassVar[int] = 410


# ---------------------------------------------------------------- the join window


def window_of(appointment: Appointment, settings: Settings) -> JoinWindow:
    return join_window(
        starts_at=appointment.starts_at,
        ends_at=appointment.ends_at,
        before=settings.visit_join_before,
        after=settings.visit_join_after,
    )


def window_message(window: JoinWindow, zone: str, now: datetime) -> str:
    """Why joining is refused now, with the times in the viewer's zone."""
    try:
        tz = ZoneInfo(zone)
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    opens = local_text(window.opens_at, tz)
    closes = local_text(window.closes_at, tz)
    if window.state(now) is WindowState.NOT_YET:
        return f"This visit opens on {opens} and closes on {closes} ({tz.key})."
    return f"This visit could be joined from {opens} until {closes} ({tz.key}); it is closed now."


async def _load_appointment(
    session: AsyncSession, appointment_id: int, *, lock: bool = False
) -> Appointment:
    appointment = await session.get(Appointment, appointment_id, with_for_update=lock)
    if appointment is None:
        raise NotFound("No such visit.")
    return appointment


def _check_joinable(
    actor: Actor | None, appointment: Appointment, settings: Settings, now: datetime
) -> VisitRole:
    role = participant_role(
        actor, patient_id=appointment.patient_id, doctor_id=appointment.doctor_id
    )
    assert actor is not None
    if appointment.status != Status.BOOKED.value:
        raise VisitOver(f"This appointment is {appointment.status.replace('_', ' ')}.")
    window = window_of(appointment, settings)
    if not window.is_open(now):
        raise OutsideJoinWindow(window_message(window, actor.time_zone, now), window=window)
    return role


# ---------------------------------------------------------------- joining


@dataclass(frozen=True, slots=True)
class JoinTicket:
    appointment_id: int
    role: VisitRole
    token: str
    token_expires_in: timedelta
    ice_servers: list[dict[str, object]]
    window: JoinWindow
    websocket_path: str


async def join_ticket(
    *,
    session: AsyncSession,
    actor: Actor | None,
    appointment_id: int,
    settings: Settings,
    now: datetime | None = None,
) -> JoinTicket:
    """What a participant needs to open the signalling websocket, inside the join window only:
    a signed join token bound to them and this visit, and ICE servers with TURN credentials."""
    now = now or utcnow()
    async with session.begin():
        appointment = await _load_appointment(session, appointment_id)
        role = _check_joinable(actor, appointment, settings, now)
        visit = await _visit_of(session, appointment_id)
        if visit is not None and visit.ended_at is not None:
            raise VisitOver("This visit has ended.")
    assert actor is not None
    return JoinTicket(
        appointment_id=appointment_id,
        role=role,
        token=tokens.issue_join_token(
            secret=settings.secret_key, user_id=actor.user_id, appointment_id=appointment_id
        ),
        token_expires_in=settings.join_token_ttl,
        ice_servers=tokens.ice_servers(
            stun_urls=settings.stun_urls,
            turn_urls=settings.turn_urls,
            turn_secret=settings.turn_secret,
            user_id=actor.user_id,
            now=now,
            ttl=settings.turn_credential_ttl,
        ),
        window=window_of(appointment, settings),
        websocket_path=f"/visits/{appointment_id}/ws",
    )


@dataclass(frozen=True, slots=True)
class VisitState:
    visit_id: int
    admitted: bool
    ended: bool
    present: dict[str, bool]

    def message(self) -> dict[str, Any]:
        return {
            "type": "state",
            "admitted": self.admitted,
            "ended": self.ended,
            "present": dict(self.present),
        }


@dataclass(frozen=True, slots=True)
class Joined:
    visit_id: int
    role: VisitRole
    user_id: int
    replaced: str | None
    """The connection id this one replaced (the same participant's older connection)."""
    state: VisitState


async def _visit_of(session: AsyncSession, appointment_id: int) -> Visit | None:
    visit: Visit | None = await session.scalar(
        select(Visit).where(Visit.appointment_id == appointment_id)
    )
    return visit


async def _event(
    session: AsyncSession, visit_id: int, kind: str, user_id: int | None, **details: Any
) -> None:
    session.add(VisitEvent(visit_id=visit_id, kind=kind, user_id=user_id, details=details))


async def open_connection(
    *,
    session: AsyncSession,
    actor: Actor | None,
    appointment_id: int,
    token: str,
    settings: Settings,
    connection_id: str,
    instance_id: str,
    presence_ttl: timedelta,
    now: datetime | None = None,
) -> Joined:
    """Admit a websocket to the visit: the session's user, holding a valid join token for
    this user and this visit, inside the window. Records presence and a ``joined`` event.

    Raises ``NotAuthenticated``, ``Forbidden``, ``NotFound``, ``OutsideJoinWindow`` or
    ``VisitOver``; nothing is recorded then."""
    now = now or utcnow()
    user = _holder_of_join_token(actor, appointment_id, token, settings, now)
    async with session.begin():
        appointment = await _load_appointment(session, appointment_id)
        role = _check_joinable(user, appointment, settings, now)
        visit = await _open_visit(session, appointment_id)
        replaced = await _take_presence(
            session,
            visit,
            role,
            user_id=user.user_id,
            connection_id=connection_id,
            instance_id=instance_id,
            now=now,
            expires_at=now + presence_ttl,
        )
        await _event(
            session,
            visit.id,
            "joined",
            user.user_id,
            role=role.value,
            instance=instance_id,
            resumed=replaced is not None,
        )
        state = await _state(session, visit)
    return Joined(
        visit_id=visit.id, role=role, user_id=user.user_id, replaced=replaced, state=state
    )


def _holder_of_join_token(
    actor: Actor | None, appointment_id: int, token: str, settings: Settings, now: datetime
) -> Actor:
    """The actor, if the join token was issued to them for this appointment and is valid."""
    if actor is None:
        raise NotAuthenticated("Log in to join the visit.")
    try:
        claim = tokens.read_join_token(
            secret=settings.secret_key, token=token, ttl=settings.join_token_ttl, now=now
        )
    except tokens.TokenRefused as exc:
        raise NotAuthenticated(f"The join link is {exc.reason}; open the visit again.") from exc
    if claim.user_id != actor.user_id or claim.appointment_id != appointment_id:
        raise NotAuthenticated("This join link is not yours; open the visit again.")
    return actor


async def _open_visit(session: AsyncSession, appointment_id: int) -> Visit:
    """The appointment's visit (created on first join), locked; refuses one that has ended."""
    await session.execute(
        insert(Visit)
        .values(appointment_id=appointment_id)
        .on_conflict_do_nothing(index_elements=[Visit.appointment_id])
    )
    visit = await session.scalar(
        select(Visit).where(Visit.appointment_id == appointment_id).with_for_update()
    )
    assert visit is not None
    if visit.ended_at is not None:
        raise VisitOver("This visit has ended.")
    return visit


async def _take_presence(
    session: AsyncSession,
    visit: Visit,
    role: VisitRole,
    *,
    user_id: int,
    connection_id: str,
    instance_id: str,
    now: datetime,
    expires_at: datetime,
) -> str | None:
    """Make this connection the role's presence in the visit; returns the connection it
    replaces (the same user on another socket), if any."""
    previous = await session.get(VisitPresence, (visit.id, role.value), with_for_update=True)
    holder = {
        "user_id": user_id,
        "connection_id": connection_id,
        "instance_id": instance_id,
        "joined_at": now,
        "expires_at": expires_at,
    }
    await session.execute(
        insert(VisitPresence)
        .values(visit_id=visit.id, role=role.value, **holder)
        .on_conflict_do_update(
            index_elements=[VisitPresence.visit_id, VisitPresence.role], set_=holder
        )
    )
    return previous.connection_id if previous is not None else None


async def _state(session: AsyncSession, visit: Visit) -> VisitState:
    present_roles = set(
        await session.scalars(
            select(VisitPresence.role).where(
                VisitPresence.visit_id == visit.id, VisitPresence.expires_at > func.now()
            )
        )
    )
    return VisitState(
        visit_id=visit.id,
        admitted=visit.admitted_at is not None,
        ended=visit.ended_at is not None,
        present={r.value: r.value in present_roles for r in VisitRole},
    )


async def visit_state(*, session: AsyncSession, visit_id: int) -> VisitState:
    async with session.begin():
        visit = await session.get(Visit, visit_id, populate_existing=True)
        if visit is None:
            raise NotFound("No such visit.")
        return await _state(session, visit)


# ---------------------------------------------------------------- the waiting room


async def admit(
    *, session: AsyncSession, role: VisitRole, user_id: int, visit_id: int
) -> VisitState:
    """The doctor admits the waiting patient; admission is kept until the visit ends."""
    require_visit_doctor(role, "admit the patient")
    async with session.begin():
        visit = await session.get(Visit, visit_id, with_for_update=True)
        if visit is None:
            raise NotFound("No such visit.")
        if visit.ended_at is not None:
            raise VisitOver("This visit has ended.")
        if visit.admitted_at is None:
            present = await session.scalar(
                select(VisitPresence.role).where(
                    VisitPresence.visit_id == visit_id,
                    VisitPresence.role == VisitRole.PATIENT.value,
                    VisitPresence.expires_at > func.now(),
                )
            )
            if present is None:
                raise InvalidState("The patient is not in the waiting room.")
            visit.admitted_at = utcnow()
            await _event(session, visit_id, "admitted", user_id)
        return await _state(session, visit)


async def leave(
    *,
    session: AsyncSession,
    visit_id: int,
    role: VisitRole,
    user_id: int,
    connection_id: str,
    kind: str = "left",
    **details: Any,
) -> None:
    """The connection ends: ``left`` (on purpose) or ``disconnected`` (dropped; the client
    reconnects). Presence is removed only if it still belongs to this connection."""
    async with session.begin():
        await session.execute(
            delete(VisitPresence).where(
                VisitPresence.visit_id == visit_id,
                VisitPresence.role == role.value,
                VisitPresence.connection_id == connection_id,
            )
        )
        await _event(session, visit_id, kind, user_id, role=role.value, **details)


async def end_visit(
    *, session: AsyncSession, role: VisitRole, user_id: int, visit_id: int
) -> VisitState:
    """The doctor ends the visit; the appointment becomes completed (with its history event)."""
    require_visit_doctor(role, "end the visit")
    now = utcnow()
    async with session.begin():
        visit = await session.get(Visit, visit_id, with_for_update=True)
        if visit is None:
            raise NotFound("No such visit.")
        if visit.ended_at is None:
            visit.ended_at = now
            visit.ended_by = user_id
            await _event(session, visit_id, "ended", user_id)
            appointment = await _load_appointment(session, visit.appointment_id, lock=True)
            if appointment.status == Status.BOOKED.value:
                appointment.status = Status.COMPLETED.value
                appointment.sequence += 1
                appointment.updated_at = now
                session.add(
                    AppointmentEvent(
                        appointment_id=appointment.id,
                        kind=Status.COMPLETED.value,
                        actor_id=user_id,
                        details={"via": "video visit"},
                    )
                )
        await session.execute(delete(VisitPresence).where(VisitPresence.visit_id == visit_id))
        return await _state(session, visit)


@dataclass(frozen=True, slots=True)
class Waiting:
    appointment_id: int
    patient_name: str
    since: datetime


async def waiting_patients(
    *, session: AsyncSession, actor: Actor | None, doctor_id: int | None = None
) -> list[Waiting]:
    """The doctor's patients who wait in a visit's waiting room now."""
    from clinic.accounts.guards import require_doctor

    doctor = require_doctor(actor)
    patient = aliased(User)
    async with session.begin():
        rows = await session.execute(
            select(Appointment.id, patient.name, VisitPresence.joined_at)
            .join(Visit, Visit.appointment_id == Appointment.id)
            .join(VisitPresence, VisitPresence.visit_id == Visit.id)
            .join(patient, patient.id == Appointment.patient_id)
            .where(
                Appointment.doctor_id == doctor.user_id,
                VisitPresence.role == VisitRole.PATIENT.value,
                VisitPresence.expires_at > func.now(),
                Visit.admitted_at.is_(None),
                Visit.ended_at.is_(None),
            )
            .order_by(VisitPresence.joined_at)
        )
        return [Waiting(a, n, s) for a, n, s in rows.all()]


# ---------------------------------------------------------------- notes and history


@dataclass(frozen=True, slots=True)
class NoteView:
    body: str
    author_name: str
    written_at: datetime


async def _participant_visit(
    session: AsyncSession, actor: Actor | None, appointment_id: int
) -> tuple[VisitRole, Appointment, Visit | None]:
    appointment = await _load_appointment(session, appointment_id)
    role = participant_role(
        actor, patient_id=appointment.patient_id, doctor_id=appointment.doctor_id
    )
    return role, appointment, await _visit_of(session, appointment_id)


async def write_note(
    *, session: AsyncSession, actor: Actor | None, appointment_id: int, body: str
) -> NoteView:
    """The appointment's doctor writes a note once the visit has ended."""
    body = body.strip()
    if not body:
        raise InvalidInput("Write the note first.", field="note")
    if len(body) > NOTE_MAX:
        raise InvalidInput(f"A note is at most {NOTE_MAX} characters.", field="note")
    async with session.begin():
        role, appointment, visit = await _participant_visit(session, actor, appointment_id)
        require_visit_doctor(role, "write the visit note")
        if visit is None or visit.ended_at is None:
            raise InvalidState("Write the visit note after the visit has ended.", field="note")
        assert actor is not None
        note = VisitNote(visit_id=visit.id, author_id=actor.user_id, body=body)
        session.add(note)
        await session.flush()
        await session.refresh(note)
        await audit.record(
            session,
            actor=actor,
            patient_id=appointment.patient_id,
            action="create",
            subject=f"visit_note:{note.id}",
        )
        return NoteView(body=note.body, author_name=actor.name, written_at=note.written_at)


async def _audit_note_read(
    session: AsyncSession, actor: Actor | None, appointment: Appointment
) -> None:
    """Visit notes are patient data: reading them is recorded in the same transaction."""
    await audit.record(
        session,
        actor=actor,
        patient_id=appointment.patient_id,
        action="read",
        subject=f"visit_notes:appointment:{appointment.id}",
    )


async def _notes(session: AsyncSession, visit_id: int) -> list[NoteView]:
    rows = await session.execute(
        select(VisitNote.body, User.name, VisitNote.written_at)
        .join(User, User.id == VisitNote.author_id)
        .where(VisitNote.visit_id == visit_id)
        .order_by(VisitNote.written_at, VisitNote.id)
    )
    return [NoteView(b, n, w) for b, n, w in rows.all()]


async def visit_notes(
    *, session: AsyncSession, actor: Actor | None, appointment_id: int
) -> list[NoteView]:
    """The visit's notes, for its patient and doctor only."""
    async with session.begin():
        _, appointment, visit = await _participant_visit(session, actor, appointment_id)
        notes = [] if visit is None else await _notes(session, visit.id)
        if notes:
            await _audit_note_read(session, actor, appointment)
        return notes


async def visit_events(
    *, session: AsyncSession, actor: Actor | None, appointment_id: int
) -> list[VisitEvent]:
    async with session.begin():
        _, _, visit = await _participant_visit(session, actor, appointment_id)
        if visit is None:
            return []
        rows = await session.scalars(
            select(VisitEvent)
            .where(VisitEvent.visit_id == visit.id)
            .order_by(VisitEvent.at, VisitEvent.id)
        )
        return list(rows)


@dataclass(frozen=True, slots=True)
class VisitSummary:
    """What the appointment page shows about the visit."""

    role: VisitRole
    window: JoinWindow
    window_state: WindowState
    can_join: bool
    ended: bool
    notes: list[NoteView] = field(default_factory=list)
    may_write_note: bool = False


async def visit_summary(
    *,
    session: AsyncSession,
    actor: Actor | None,
    appointment_id: int,
    settings: Settings,
    now: datetime | None = None,
) -> VisitSummary | None:
    """None when the actor is not a participant (an admin): they see no visit and no notes."""
    now = now or utcnow()
    try:
        async with session.begin():
            role, appointment, visit = await _participant_visit(session, actor, appointment_id)
            notes = [] if visit is None else await _notes(session, visit.id)
            if notes:
                await _audit_note_read(session, actor, appointment)
    except ClinicError:
        return None
    window = window_of(appointment, settings)
    ended = visit is not None and visit.ended_at is not None
    state = window.state(now)
    return VisitSummary(
        role=role,
        window=window,
        window_state=state,
        can_join=state is WindowState.OPEN
        and not ended
        and appointment.status == Status.BOOKED.value,
        ended=ended,
        notes=notes,
        may_write_note=role is VisitRole.DOCTOR and ended,
    )
