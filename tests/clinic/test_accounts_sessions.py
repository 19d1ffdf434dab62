"""Sessions and tokens from the attacker's side: a cookie kept after "log out everywhere" or
after a password change, an expired or over-long API token, an open visit socket whose
session, token or appointment goes away."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta

import httpx
import pytest
import websockets
from sqlalchemy import update

from clinic.accounts.models import ApiToken
from clinic.core.config import Settings
from clinic.core.db import utcnow
from factories import PASSWORD, make_doctor, make_patient, token_for
from visits_fixtures import log_in, make_appointment, visit_settings

NEW_PASSWORD = "a quite different passphrase 42"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings, visit_recheck_interval=timedelta(milliseconds=200))


async def api_login(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    r = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    csrf: str = r.json()["csrf_token"]
    return csrf


async def page_csrf(http: httpx.AsyncClient, path: str) -> str:
    page = await http.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_logout_everywhere_ends_every_cookie_session(app, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    async with app.client() as laptop, app.client() as phone, app.client() as thief:
        csrf = await api_login(laptop, patient.email)
        await api_login(phone, patient.email)
        await api_login(thief, patient.email)
        stolen = dict(thief.cookies)
        assert (await phone.get("/api/v1/me")).status_code == 200

        r = await laptop.post("/api/v1/auth/logout-everywhere", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204

        for client in (laptop, phone, thief):
            assert (await client.get("/api/v1/me")).status_code == 401
        # The stolen cookie, replayed as is, is refused too: by API and by page.
        async with app.client(cookies=stolen) as replay:
            assert (await replay.get("/api/v1/me")).status_code == 401
            r = await replay.get("/appointments")
            assert r.status_code == 303 and r.headers["location"].startswith("/login")
        # Logging in again works.
        await api_login(phone, patient.email)
        assert (await phone.get("/api/v1/me")).status_code == 200


async def test_logout_everywhere_page(app, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    async with app.client() as browser, app.client() as other:
        await log_in(browser, patient.email)
        await log_in(other, patient.email)
        csrf = await page_csrf(browser, "/account")
        r = await browser.post("/logout/everywhere", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        for client in (browser, other):
            r = await client.get("/account")
            assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_password_change_ends_other_sessions_only(app, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    async with app.client() as me, app.client() as thief:
        csrf = await api_login(me, patient.email)
        await api_login(thief, patient.email)
        wrong = await me.post(
            "/api/v1/auth/password",
            json={"current_password": "not my password", "new_password": NEW_PASSWORD},
            headers={"X-CSRF-Token": csrf},
        )
        assert wrong.status_code == 422
        assert wrong.json()["error"]["field"] == "current_password"
        assert (await thief.get("/api/v1/me")).status_code == 200  # nothing changed

        r = await me.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 200, r.text
        new_csrf = r.json()["csrf_token"]
        assert (await thief.get("/api/v1/me")).status_code == 401
        assert (await me.get("/api/v1/me")).status_code == 200
        # The changer's session goes on, with the new CSRF token.
        r = await me.post("/api/v1/tokens", json={}, headers={"X-CSRF-Token": new_csrf})
        assert r.status_code == 201

    async with app.client() as fresh:
        old = await fresh.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}
        )
        assert old.status_code == 401
        await api_login(fresh, patient.email, NEW_PASSWORD)


async def test_password_change_page(app, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    async with app.client() as browser, app.client() as other:
        await log_in(browser, patient.email)
        await log_in(other, patient.email)
        csrf = await page_csrf(browser, "/account")
        weak = await browser.post(
            "/account/password",
            data={"csrf_token": csrf, "current_password": PASSWORD, "new_password": "short"},
        )
        assert weak.status_code == 422 and "at least" in weak.text
        r = await browser.post(
            "/account/password",
            data={"csrf_token": csrf, "current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert r.status_code == 303 and r.headers["location"] == "/account"
        assert (await browser.get("/account")).status_code == 200
        r = await other.get("/account")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_tokens_expire(app, http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    r = await http.post("/api/v1/auth/token", json={"email": patient.email, "password": PASSWORD})
    assert r.status_code == 201
    body = r.json()
    auth = {"Authorization": f"Bearer {body['token']}"}
    lifetime = (
        datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    ).total_seconds()
    assert abs(lifetime - settings.api_token_ttl.total_seconds()) < 60
    assert (await http.get("/api/v1/me", headers=auth)).status_code == 200

    async with sessions() as s, s.begin():
        await s.execute(
            update(ApiToken)
            .where(ApiToken.id == body["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await http.get("/api/v1/me", headers=auth)).status_code == 401

    # A token from before expiry existed (no expires_at) lives the default lifetime.
    legacy = await token_for(http, patient)
    async with sessions() as s, s.begin():
        await s.execute(
            update(ApiToken)
            .where(ApiToken.expires_at > utcnow())
            .values(expires_at=None, created_at=utcnow() - settings.api_token_ttl)
        )
    assert (await http.get("/api/v1/me", headers=legacy)).status_code == 401


async def test_token_lifetime_is_chosen_within_bounds(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    auth = await token_for(http, patient)
    r = await http.post("/api/v1/tokens", json={"expires_in_days": 7}, headers=auth)
    assert r.status_code == 201
    body = r.json()
    days = (
        datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    ).days
    assert days in (6, 7)
    too_long = settings.api_token_max_ttl.days + 1
    for bad in (0, -1, True, 1.5, "7", too_long, 10**20):
        r = await http.post("/api/v1/tokens", json={"expires_in_days": bad}, headers=auth)
        assert r.status_code == 422, (bad, r.text)
    listed = (await http.get("/api/v1/tokens", headers=auth)).json()
    assert len(listed) == 2 and all(t["expires_at"] for t in listed)


# ---------------------------------------------------------------- open visit sockets


async def open_socket(
    base: str, appt: int, client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> websockets.ClientConnection:
    """Join the visit the way the page does: a join token, then the socket."""
    r = await client.get(f"/api/v1/visits/{appt}/join", headers=headers or {})
    assert r.status_code == 200, r.text
    ticket = r.json()
    uri = "ws" + base.removeprefix("http") + f"{ticket['websocket_path']}?token={ticket['token']}"
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    extra = {**(headers or {}), **({"Cookie": cookie} if cookie and not headers else {})}
    ws = await websockets.connect(uri, additional_headers=extra)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome"
    return ws


async def close_code(ws: websockets.ClientConnection) -> int | None:
    """Read until the server closes the socket (a bounded wait, not a speed claim)."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    return ws.close_code


async def test_socket_closes_when_its_token_is_revoked(app, http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    auth = await token_for(http, patient)
    ws = await open_socket(app.base_url, appt, http, auth)
    tokens = (await http.get("/api/v1/tokens", headers=auth)).json()
    other = await token_for(http, patient)
    r = await http.delete(f"/api/v1/tokens/{tokens[0]['id']}", headers=other)
    assert r.status_code == 204
    assert await close_code(ws) == 4401


async def test_socket_closes_on_logout_everywhere(app, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    async with app.client() as browser:
        csrf = await api_login(browser, patient.email)
        ws = await open_socket(app.base_url, appt, browser)
        await ws.send(json.dumps({"type": "ping"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "pong":
            pass  # state updates may come first
        r = await browser.post("/api/v1/auth/logout-everywhere", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        assert await close_code(ws) == 4401


async def test_socket_closes_when_its_appointment_is_cancelled(
    app, http, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    p_auth, d_auth = await token_for(http, patient), await token_for(http, doctor)
    ws = await open_socket(app.base_url, appt, http, p_auth)
    r = await http.post(
        f"/api/v1/appointments/{appt}/cancel", json={"reason": "ill"}, headers=d_auth
    )
    assert r.status_code == 200, r.text
    assert await close_code(ws) == 4410
