"""Started with each app instance: the visits hub (its LISTEN connection and heartbeat)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clinic.visits.hub import Hub
from clinic.web.deps import AppState

_ATTR = "visits_hub"


def hub_of(state: AppState) -> Hub:
    """This instance's hub (set while the app runs)."""
    hub = getattr(state, _ATTR, None)
    if not isinstance(hub, Hub):
        raise RuntimeError("the visits hub is not running (app lifespan not started?)")
    return hub


@asynccontextmanager
async def lifespan(state: AppState) -> AsyncIterator[None]:
    url = state.settings.database_url
    assert url is not None
    # Unique per process; the colour helps reading logs and presence rows during a deploy.
    instance_id = f"{state.settings.color or 'instance'}-{uuid.uuid4().hex[:10]}"
    async with Hub(dsn=url, instance_id=instance_id) as hub:
        setattr(state, _ATTR, hub)
        try:
            yield
        finally:
            delattr(state, _ATTR)
