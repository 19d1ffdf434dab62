"""Fixtures that build real things: one throwaway embedded PostgreSQL per test run, a fresh
database per test (cloned from a migrated template), and the app served on a free port."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from clinic.app import compose_features, create_app
from clinic.core import schema
from clinic.core.config import Settings
from clinic.core.db import make_engine, make_sessionmaker
from clinic.core.embedded import EmbeddedPostgres

TEMPLATE = "clinic_template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True, scope="session")
def _composed_features() -> None:
    """Tests that call a use case without an app still get the features composed as
    ``create_app`` composes them (without this, such a test passed only after another test
    had built an app)."""
    compose_features()


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", ephemeral=True)
    url = server.ensure_database(TEMPLATE).replace("postgresql://", "postgresql+asyncpg://", 1)
    schema.upgrade(url)
    yield server
    server.stop()


def async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
async def db_url(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(async_url(pg.url()), pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    yield async_url(pg.url(name))
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=db_url,
        var_dir=tmp_path / "var",
        secret_key="test-secret-key-0123456789abcdef",
        login_slowdown_seconds=0.01,
        smoke_password="smoke-test-password-4711",
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    assert settings.database_url is not None
    eng = make_engine(settings.database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


class RunningApp:
    def __init__(self, base_url: str, settings: Settings) -> None:
        self.base_url = base_url
        self.settings = settings

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=20.0, **kwargs)  # type: ignore[arg-type]


async def serve(settings: Settings) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[RunningApp]:
    """The clinic served by uvicorn on a free port (real HTTP over a real socket)."""
    server, task, url = await serve(settings)
    yield RunningApp(url, settings)
    server.should_exit = True
    await task


@pytest.fixture
async def http(app: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with app.client() as client:
        yield client
