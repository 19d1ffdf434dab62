"""Started with each app instance: the visits hub (its LISTEN connection and heartbeat),
kept in the visits feature's part of the app state."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from clinic.visits.hub import Hub
from clinic.web.deps import AppState


@dataclass
class VisitsState(AppState):
    """The app state with the visits feature's part (``clinic.app.ClinicState`` is one)."""

    hub: Hub | None = None
    """This instance's hub while the app runs."""


def hub_of(state: AppState) -> Hub:
    """This instance's hub (set while the app runs)."""
    if not isinstance(state, VisitsState) or state.hub is None:
        raise RuntimeError("the visits hub is not running (app lifespan not started?)")
    return state.hub


@asynccontextmanager
async def lifespan(state: AppState) -> AsyncIterator[None]:
    if not isinstance(state, VisitsState):
        raise TypeError("the app state has no part for visits (see clinic.app.ClinicState)")
    url = state.settings.database_url
    assert url is not None
    # Unique per process; the colour helps reading logs and presence rows during a deploy.
    instance_id = f"{state.settings.color or 'instance'}-{uuid.uuid4().hex[:10]}"
    async with Hub(dsn=url, instance_id=instance_id) as hub:
        state.hub = hub
        try:
            yield
        finally:
            state.hub = None
