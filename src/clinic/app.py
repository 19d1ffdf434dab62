"""``create_app(settings)``: the clinic as an ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from clinic import health
from clinic.accounts import api as accounts_api
from clinic.appointments import api as appointments_api
from clinic.core.config import Settings
from clinic.core.db import make_engine, make_sessionmaker
from clinic.scheduling import api as scheduling_api
from clinic.web import errors
from clinic.web.deps import AppState
from clinic.web.sessions import SchemeAwareSessions

STATIC = Path(__file__).parent / "web" / "static"


def create_app(settings: Settings) -> FastAPI:
    """The application for ``settings``; ``settings.database_url`` must be set (the CLI
    starts the embedded database and fills it in when none is configured)."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url")
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(
        title="Clinic",
        version=settings.release_id,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )
    app.state.clinic = AppState(
        settings=settings, engine=engine, sessions=make_sessionmaker(engine)
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(accounts_api.router)
    app.include_router(scheduling_api.router)
    app.include_router(appointments_api.router)
    _include_pages(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SchemeAwareSessions, settings=settings)
    return app


def _include_pages(app: FastAPI) -> None:
    """HTML pages, one router per feature (each module may not exist in every release)."""
    import importlib

    for name in ("accounts", "scheduling", "appointments"):
        try:
            module = importlib.import_module(f"clinic.{name}.pages")
        except ModuleNotFoundError:
            continue
        app.include_router(module.router)
