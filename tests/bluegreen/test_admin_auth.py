"""The admin API's access rules over real HTTP: token, session cookie, CSRF and origin."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bluegreen.admin import AdminContext, make_app
from bluegreen.adminauth import COOKIE, CSRF_HEADER, Sessions
from bluegreen.config import load_config
from bluegreen.controller import Controller

TOKEN = "admin-token-for-tests-0123456789"


@dataclass
class Clock:
    now: float = 1000.0


@dataclass
class World:
    client: TestClient[web.Request, web.Application]
    clock: Clock
    shutdowns: list[int] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def login(self) -> tuple[str, str]:
        """Log in through the form; the session cookie and the dashboard's CSRF token."""
        resp = await self.client.post(
            "/login", data={"token": TOKEN}, headers={"Origin": self.origin}, allow_redirects=False
        )
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookie = resp.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert int(cookie["max-age"]) > 0  # the cookie expires
        return cookie.value, await self.csrf(cookie.value)

    async def csrf(self, session: str) -> str:
        # GET /logout renders the logout form (the dashboard needs a controller): read the
        # token the way a page gets it, from a form rendered for this session.
        resp = await self.client.get("/logout", cookies={COOKIE: session})
        match = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
        assert match is not None
        return match.group(1)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config_path = tmp_path / "bluegreen.toml"
    config_path.write_text(f'[app]\nname = "t"\ncommand = "{sys.executable} app.py {{port}}"\n')
    clock = Clock()
    shutdowns: list[int] = []
    ctx = AdminContext(
        config=load_config(config_path, environ={}),
        token=TOKEN,
        # The routes driven here (login, logout, shutdown) never reach the controller.
        controller=cast(Controller, None),
        urls={},
        shutdown=lambda: shutdowns.append(1),
        sessions=Sessions(ttl=60, clock=lambda: clock.now),
    )
    app = make_app(ctx)
    async with TestClient(TestServer(app)) as client:
        yield World(client, clock, shutdowns)


async def test_bearer_token_writes_need_no_csrf(world: World) -> None:
    resp = await world.client.post("/api/shutdown", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 202 and world.shutdowns == [1]
    wrong = await world.client.post("/api/shutdown", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and world.shutdowns == [1]


async def test_cookie_write_from_another_origin_is_refused(world: World) -> None:
    session, csrf = await world.login()
    for headers in (
        {"Origin": "http://evil.example", CSRF_HEADER: csrf},
        {"Origin": "null", CSRF_HEADER: csrf},
        {"Sec-Fetch-Site": "cross-site", CSRF_HEADER: csrf},
    ):
        resp = await world.client.post("/api/shutdown", cookies={COOKIE: session}, headers=headers)
        assert resp.status == 403, headers
        assert (await resp.json())["error"]["code"] == "forbidden"
    assert world.shutdowns == []
    cross_login = await world.client.post(
        "/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
    )
    assert cross_login.status == 403 and COOKIE not in cross_login.cookies


async def test_cookie_write_needs_the_sessions_csrf_token(world: World) -> None:
    session, csrf = await world.login()
    same = {"Origin": world.origin}
    missing = await world.client.post("/api/shutdown", cookies={COOKIE: session}, headers=same)
    wrong = await world.client.post(
        "/api/shutdown", cookies={COOKIE: session}, headers={**same, CSRF_HEADER: "x" * 43}
    )
    assert (missing.status, wrong.status, world.shutdowns) == (403, 403, [])
    ok = await world.client.post(
        "/api/shutdown", cookies={COOKIE: session}, headers={**same, CSRF_HEADER: csrf}
    )
    assert ok.status == 202 and world.shutdowns == [1]
    # Another session's CSRF token is no good for this one.
    other_session, other_csrf = await world.login()
    assert other_session != session and other_csrf != csrf
    crossed = await world.client.post(
        "/api/shutdown", cookies={COOKIE: session}, headers={CSRF_HEADER: other_csrf}
    )
    assert crossed.status == 403 and world.shutdowns == [1]


async def test_logout_revokes_the_session(world: World) -> None:
    session, csrf = await world.login()
    resp = await world.client.post(
        "/logout", cookies={COOKIE: session}, data={"csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    # A copy of the cookie kept by an attacker is worthless now.
    after = await world.client.post(
        "/api/shutdown", cookies={COOKIE: session}, headers={CSRF_HEADER: csrf}
    )
    page = await world.client.get("/", cookies={COOKIE: session}, allow_redirects=False)
    assert after.status == 401 and page.status == 303 and world.shutdowns == []


async def test_the_session_expires(world: World) -> None:
    session, csrf = await world.login()
    world.clock.now += 59
    assert (await world.client.get("/logout", cookies={COOKIE: session})).status == 200
    world.clock.now += 2
    resp = await world.client.post(
        "/api/shutdown", cookies={COOKIE: session}, headers={CSRF_HEADER: csrf}
    )
    assert resp.status == 401 and world.shutdowns == []
