"""Started with the app: the in-process job worker (when ``worker_in_process``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clinic.notify.worker import JobWorker
from clinic.web.deps import AppState


@asynccontextmanager
async def lifespan(state: AppState) -> AsyncIterator[None]:
    """Run a worker beside the app; at shutdown it drains within ``worker_drain_timeout``."""
    if not state.settings.worker_in_process:
        yield
        return
    worker = JobWorker(state.settings, state.sessions)
    await worker.start()
    try:
        yield
    finally:
        await worker.stop()
