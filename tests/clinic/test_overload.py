"""An instance whose database connections are all busy answers 503 with ``Retry-After``
in the error envelope after ``db_pool_timeout``, without changing anything (not a 500, and
not a wait as long as the client's); once a connection is free it answers as before."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import TimeoutError as PoolTimeout

from clinic.accounts.models import User
from clinic.core.config import Settings
from conftest import serve


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"db_pool_size": 1, "db_pool_timeout": timedelta(milliseconds=300)}
    )


async def test_exhausted_pool_is_a_quick_503_that_changes_nothing(settings, sessions) -> None:
    server, task, url = await serve(settings)
    engine = server.config.app.state.clinic.engine
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http, AsyncExitStack() as held:
            assert (await http.get("/api/v1/doctors")).status_code == 200
            users_before = await _count_users(sessions)
            # Take every connection the instance's pool will hand out.
            while True:
                try:
                    await held.enter_async_context(engine.connect())
                except PoolTimeout:
                    break
            r = await http.post(
                "/api/v1/patients",
                json={
                    "email": "busy@example.org",
                    "password": "a long enough password 1",
                    "name": "Busy",
                    "date_of_birth": "1990-01-01",
                },
            )
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "busy"
            page = await http.get("/doctors")
            assert page.status_code == 503
            assert "text/html" in page.headers["content-type"]
            await held.aclose()
            assert (await http.get("/api/v1/doctors")).status_code == 200
        assert await _count_users(sessions) == users_before
    finally:
        server.should_exit = True
        await task


async def _count_users(sessions) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(User)) or 0)
