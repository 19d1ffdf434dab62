"""``create_app(settings)``: the clinic as an ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from clinic import health
from clinic.appointments import booked as appointments_booked
from clinic.appointments import pages as appointment_pages
from clinic.core.config import Settings
from clinic.core.db import make_engine, make_sessionmaker
from clinic.core.request_context import RequestContextMiddleware
from clinic.features import feature_modules
from clinic.metrics import MetricsMiddleware
from clinic.scheduling import booked
from clinic.visits import service as visits
from clinic.visits.runtime import VisitsState
from clinic.web import errors, identity
from clinic.web.limits import BodySizeLimit
from clinic.web.sessions import SchemeAwareSessions
from clinic.web.throttle import ThrottleRegistrations, registration_throttle

STATIC = Path(__file__).parent / "web" / "static"


@dataclass
class ClinicState(VisitsState):
    """The app's state: the ground part every feature uses (``web.deps.AppState``) and the
    parts features add (the visits hub)."""


def compose_features() -> None:
    """Fill the holes lower features leave for higher ones (``clinic.core.provided``)."""
    booked.SOURCE.provide(appointments_booked.BOOKINGS)
    appointment_pages.VISIT_SUMMARY.provide(visits.visit_summary)


def create_app(settings: Settings) -> FastAPI:
    """The application for ``settings``; ``settings.database_url`` must be set (the CLI
    starts the embedded database and fills it in when none is configured)."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url")
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout.total_seconds(),
    )

    state = ClinicState(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    compose_features()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for module in feature_modules("runtime"):
                await stack.enter_async_context(module.lifespan(state))
            yield
        await engine.dispose()

    app = FastAPI(
        title="Clinic",
        version=settings.release_id,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )
    app.state.clinic = state
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ThrottleRegistrations, throttle=registration_throttle(settings))
    app.include_router(health.router)
    app.include_router(identity.router)  # /api/v1/clinic and /favicon.ico
    for kind in ("api", "pages"):
        for module in feature_modules(kind):
            app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SchemeAwareSessions, settings=settings)
    # Outermost: every audit record written while serving a request names its address and id.
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(MetricsMiddleware, settings=settings)  # times everything, errors too
    return app
