"""Helpers for the visit tests: appointments inside (or outside) the join window, settings
without STUN (no network here: host candidates on loopback suffice), second instances."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts.guards import Actor
from clinic.appointments.models import Appointment, AppointmentEvent
from clinic.core.config import Settings
from clinic.visits.client import SignallingClient
from clinic.visits.hub import Hub
from conftest import serve


def visit_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"stun_urls": [], **changes})


async def make_appointment(
    sessions: async_sessionmaker[AsyncSession],
    *,
    doctor: Actor,
    patient: Actor,
    starts_in: timedelta = timedelta(minutes=2),
    length: timedelta = timedelta(minutes=30),
    status: str = "booked",
) -> int:
    """An appointment starting ``starts_in`` from now, written directly: booking refuses slots
    this close (minimum notice), and a visit test needs one inside the join window."""
    starts = datetime.now(UTC).replace(microsecond=0) + starts_in
    async with sessions() as session, session.begin():
        appointment = Appointment(
            doctor_id=doctor.user_id,
            patient_id=patient.user_id,
            starts_at=starts,
            ends_at=starts + length,
            buffer_ends_at=starts + length,
            status=status,
            reason="video visit test",
        )
        session.add(appointment)
        await session.flush()
        session.add(
            AppointmentEvent(appointment_id=appointment.id, kind="booked", actor_id=patient.user_id)
        )
        return appointment.id


@dataclass
class Instance:
    """An app instance served by uvicorn on a free port."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str

    @property
    def hub(self) -> Hub:
        hub = self.server.config.app.state.clinic.hub
        assert isinstance(hub, Hub)
        return hub

    async def stop(self) -> None:
        """What a drained colour does: stop accepting, close websockets (1012), shut down."""
        self.server.should_exit = True
        await self.task


async def start_instance(settings: Settings) -> Instance:
    server, task, url = await serve(settings)
    return Instance(server, task, url)


@contextlib.asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[Instance]:
    inst = await start_instance(settings)
    try:
        yield inst
    finally:
        if not inst.task.done():
            await inst.stop()


async def bearer(base_url: str, actor: Actor) -> dict[str, str]:
    from factories import token_for

    async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
        return await token_for(http, actor)


def client(
    urls: list[str] | str, appointment_id: int, headers: dict[str, str], **kwargs: Any
) -> SignallingClient:
    return SignallingClient(
        base_urls=[urls] if isinstance(urls, str) else urls,
        appointment_id=appointment_id,
        headers=headers,
        backoff_initial=0.05,
        backoff_max=0.5,
        **kwargs,
    )


async def log_in(http: httpx.AsyncClient, email: str) -> None:
    """A browser-style login: the session cookie lands in ``http``'s cookie jar."""
    import re

    from factories import PASSWORD

    page = await http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    r = await http.post(
        "/login", data={"csrf_token": token.group(1), "email": email, "password": PASSWORD}
    )
    assert r.status_code == 303, r.text
