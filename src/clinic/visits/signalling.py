"""The signalling websocket ``/visits/{appointment_id}/ws?token=...``.

Authentication happens when the socket opens: the session cookie (browsers) or an API bearer
token in the handshake's ``Authorization`` header (other clients), and the join token from
``GET /api/v1/visits/{id}/join``, bound to that user and this visit. A refused socket is
accepted only to be closed at once with a 44xx code (see ``protocol.CloseCode``): it is never
subscribed, so nothing it sends reaches the visit and nothing of the visit reaches it.

An admitted socket is re-checked on every message it sends and every
``CLINIC_VISIT_RECHECK_INTERVAL``: once its session or token is revoked it is closed with
4401, once its appointment is cancelled with 4410.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from starlette.websockets import WebSocketState

from clinic.accounts.deps import connection_actor
from clinic.accounts.guards import VisitRole
from clinic.appointments.models import Appointment, Status
from clinic.core.errors import (
    ClinicError,
    Forbidden,
    NotAuthenticated,
    NotFound,
)
from clinic.visits import service
from clinic.visits.hub import Hub, new_id
from clinic.visits.protocol import (
    VERSION,
    BadClientMessage,
    CloseCode,
    Envelope,
    Kind,
    parse_client,
)
from clinic.visits.runtime import hub_of
from clinic.web.deps import AppState

log = logging.getLogger(__name__)

router = APIRouter()

_CLOSE_FOR: list[tuple[type[ClinicError], CloseCode]] = [
    (NotAuthenticated, CloseCode.UNAUTHENTICATED),
    (Forbidden, CloseCode.FORBIDDEN),
    (NotFound, CloseCode.NOT_FOUND),
    (service.OutsideJoinWindow, CloseCode.OUTSIDE_WINDOW),
    (service.VisitOver, CloseCode.GONE),
]


def close_code_for(exc: ClinicError) -> CloseCode:
    for kind, code in _CLOSE_FOR:
        if isinstance(exc, kind):
            return code
    return CloseCode.FORBIDDEN


@router.websocket("/visits/{appointment_id}/ws")
async def visit_socket(websocket: WebSocket, appointment_id: int, token: str = "") -> None:
    state: AppState = websocket.app.state.clinic
    hub = hub_of(state)
    async with state.sessions() as session:
        actor = await connection_actor(websocket, session)
    await websocket.accept()
    connection_id = new_id()
    try:
        async with state.sessions() as session:
            joined = await service.open_connection(
                session=session,
                actor=actor,
                appointment_id=appointment_id,
                token=token,
                settings=state.settings,
                connection_id=connection_id,
                instance_id=hub.instance_id,
                presence_ttl=hub.presence_ttl,
            )
    except ClinicError as exc:
        code = close_code_for(exc)
        log.info("visits: refused a socket for appointment %s: %s", appointment_id, code.name)
        await websocket.close(code=int(code), reason=exc.message[:120])
        return
    await Participant(websocket, hub, state, appointment_id, joined, connection_id).run()


class Participant:
    """One open, admitted-to-the-visit websocket (a ``hub.Subscriber``)."""

    def __init__(
        self,
        websocket: WebSocket,
        hub: Hub,
        state: AppState,
        appointment_id: int,
        joined: service.Joined,
        connection_id: str,
    ) -> None:
        self.websocket = websocket
        self.hub = hub
        self.app = state
        self.appointment_id = appointment_id
        self.joined = joined
        self._connection_id = connection_id
        self.visit_state = joined.state
        self._inbox: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._is_replaced = False
        self._outcome: tuple[str, int] | None = None
        """How the connection ended: (visit event kind, close code) once decided."""

    # ------------------------------------------------------------ hub.Subscriber

    @property
    def visit_id(self) -> int:
        return self.joined.visit_id

    @property
    def connection_id(self) -> str:
        return self._connection_id

    @property
    def role(self) -> str:
        return self.joined.role.value

    @property
    def user_id(self) -> int:
        return self.joined.user_id

    def deliver(self, envelope: Envelope) -> None:
        self._inbox.put_nowait(envelope)

    def replaced(self) -> None:
        self._is_replaced = True
        self._inbox.put_nowait(None)

    # ------------------------------------------------------------ the connection

    async def run(self) -> None:
        self.hub.subscribe(self)
        try:
            if self.joined.replaced:
                await self.hub.publish(
                    Envelope(
                        visit=self.visit_id,
                        kind=Kind.REPLACE,
                        sender=self.connection_id,
                        to=self.joined.replaced,
                        id=new_id(),
                    )
                )
            await self.hub.changed(self.visit_id)
            await self._send(
                {
                    **self.visit_state.message(),
                    "type": "welcome",
                    "v": VERSION,
                    "appointment": self.appointment_id,
                    "visit": self.visit_id,
                    "role": self.role,
                    "connection": self.connection_id,
                    "instance": self.hub.instance_id,
                }
            )
            reader = asyncio.create_task(self._read())
            writer = asyncio.create_task(self._write())
            watcher = asyncio.create_task(self._watch())
            done, pending = await asyncio.wait(
                {reader, writer, watcher}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in done:
                if task.exception() is not None:
                    log.error("visits: connection failed", exc_info=task.exception())
        finally:
            self.hub.unsubscribe(self)
            await self._finish()

    async def _finish(self) -> None:
        kind, code = self._outcome or ("disconnected", 1006)
        if kind != "ended":
            try:
                async with self.app.sessions() as session:
                    await service.leave(
                        session=session,
                        visit_id=self.visit_id,
                        role=self.joined.role,
                        user_id=self.user_id,
                        connection_id=self.connection_id,
                        kind=kind,
                        code=code,
                    )
                await self.hub.changed(self.visit_id)
            except Exception:
                log.exception("visits: could not record the end of a connection")
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code)

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(message, separators=(",", ":")))

    async def _error(self, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})

    async def _read(self) -> None:
        while True:
            try:
                text = await self.websocket.receive_text()
            except WebSocketDisconnect as exc:
                # Only a normal close (1000, or the `leave` message) means the person left.
                # 1001 "going away" is also what the router sends when it drains a colour,
                # so like 1006 (dropped) it counts as a disconnect: the client is expected
                # back, and presence expires if it does not return.
                left = exc.code == 1000
                self._outcome = ("left" if left else "disconnected", exc.code)
                return
            if await self._revoked():
                return
            try:
                message = parse_client(text)
            except BadClientMessage as exc:
                await self._error(exc.code, exc.message)
                continue
            if message.type == "ping":
                await self._send({"type": "pong"})
            elif message.type == "signal":
                await self._signal(message.data)
            elif message.type == "leave":
                self._outcome = ("left", 1000)
                return
            else:
                await self._command(message.type)

    async def _watch(self) -> None:
        """Re-check the socket's right to the visit now and then, so revoking it also ends a
        socket that sends nothing."""
        interval = self.app.settings.visit_recheck_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            if await self._revoked():
                return

    async def _revoked(self) -> bool:
        """True (and the outcome set) once the session or token that opened the socket no
        longer stands (logged out everywhere, password changed, token revoked or expired) or
        the appointment was cancelled."""
        async with self.app.sessions() as session:
            # The handshake's cookie or bearer token, asked again of the one loader.
            actor = await connection_actor(self.websocket, session)
            async with session.begin():
                status = await session.scalar(
                    select(Appointment.status).where(Appointment.id == self.appointment_id)
                )
        if actor is None or actor.user_id != self.user_id:
            self._outcome = ("revoked", int(CloseCode.UNAUTHENTICATED))
        elif status is None or status == Status.CANCELLED.value:
            self._outcome = ("revoked", int(CloseCode.GONE))
        else:
            return False
        log.info("visits: closing a socket of visit %s: no longer allowed", self.visit_id)
        return True

    async def _signal(self, data: dict[str, Any]) -> None:
        if self.visit_state.ended or not self.visit_state.admitted:
            await self._error("not_admitted", "The doctor has not admitted the patient yet.")
            return
        await self.hub.publish(
            Envelope(
                visit=self.visit_id,
                kind=Kind.SIGNAL,
                sender=self.connection_id,
                to=self.joined.role.peer.value,
                id=new_id(),
                body={"from": self.role, "data": data},
            )
        )

    async def _command(self, command: str) -> None:
        use_case = service.admit if command == "admit" else service.end_visit
        try:
            async with self.app.sessions() as session:
                self.visit_state = await use_case(
                    session=session,
                    role=self.joined.role,
                    user_id=self.user_id,
                    visit_id=self.visit_id,
                )
        except ClinicError as exc:
            await self._error(exc.code, exc.message)
            return
        await self.hub.changed(self.visit_id)

    async def _write(self) -> None:
        while True:
            envelope = await self._inbox.get()
            if envelope is None:
                if self._is_replaced:
                    self._outcome = ("replaced", int(CloseCode.REPLACED))
                    return
                continue
            if envelope.kind is Kind.SIGNAL:
                if envelope.to == self.role and envelope.sender != self.connection_id:
                    await self._send(
                        {
                            "type": "signal",
                            "from": envelope.body.get("from"),
                            "data": envelope.body.get("data"),
                        }
                    )
            elif envelope.kind is Kind.REPLACE:
                if envelope.to == self.connection_id:
                    self._outcome = ("replaced", int(CloseCode.REPLACED))
                    return
            elif envelope.kind is Kind.CHANGED:
                async with self.app.sessions() as session:
                    self.visit_state = await service.visit_state(
                        session=session, visit_id=self.visit_id
                    )
                await self._send(self.visit_state.message())
                if self.visit_state.ended:
                    await self._send({"type": "ended"})
                    self._outcome = ("ended", int(CloseCode.NORMAL))
                    return


__all__ = ["Participant", "VisitRole", "router"]
