"""Bad input gets a clear 4xx and changes nothing, through the API and the pages alike.

One test per input class from the hardening issue. Each checks the status, that the answer is
the JSON envelope (or an HTML page), that the keep-alive connection survived, and that no row
changed in the tables the request could have touched.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts.guards import Actor
from clinic.core.config import Settings
from conftest import RunningApp
from factories import PASSWORD, make_admin, make_doctor, make_patient, next_weekday_at, token_for

TOO_BIG = 2**63  # one past the largest BIGINT
TABLES = (
    "users",
    "patients",
    "doctors",
    "weekly_hours",
    "schedule_overrides",
    "appointments",
    "appointment_events",
    "idempotency_keys",
    "login_throttles",
)
# Using a token stamps its last use: that is the request being authenticated, not its input.
TOKENS = "SELECT (id, user_id, name, revoked_at)::text FROM api_tokens ORDER BY 1"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Every row of the tables bad input could reach, as text."""
    async with sessions() as session:
        out = {}
        for table in TABLES:
            rows = await session.execute(text(f"SELECT t::text FROM {table} t ORDER BY 1"))  # noqa: S608
            out[table] = rows.scalars().all()
        out["api_tokens"] = (await session.execute(text(TOKENS))).scalars().all()
        return out


class Checker:
    """Sends bad requests and asserts the 4xx, the shape of the answer and the unchanged DB."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], http: httpx.AsyncClient):
        self.sessions = sessions
        self.http = http

    async def refused(
        self, method: str, url: str, *, status: int = 422, html: bool = False, **kwargs: Any
    ) -> httpx.Response:
        before = await snapshot(self.sessions)
        port = await self._local_port()
        r = await self.http.request(method, url, **kwargs)
        assert r.status_code == status, (url, r.status_code, r.text[:500])
        if html:
            assert r.headers["content-type"].startswith("text/html"), url
        else:
            assert r.headers["content-type"] == "application/json", url
            assert r.json()["error"]["code"], r.text
        assert r.headers.get("connection") != "close"
        assert await self._local_port() == port, "the keep-alive connection was dropped"
        assert await snapshot(self.sessions) == before, f"{url} changed the database"
        return r

    async def _local_port(self) -> int:
        r = await self.http.get("/healthz/live")
        assert r.status_code == 200
        stream = r.extensions["network_stream"]
        return int(stream.get_extra_info("socket").getsockname()[1])

    async def csrf(self, path: str) -> str:
        r = await self.http.get(path)
        assert r.status_code == 200, r.text
        found = CSRF.search(r.text)
        assert found
        return found.group(1)

    async def log_in_page(self, actor: Actor) -> None:
        token = await self.csrf("/login")
        form = {"csrf_token": token, "email": actor.email, "password": PASSWORD}
        r = await self.http.post("/login", data=form)
        assert r.status_code == 303, r.text


@pytest.fixture
async def world(
    app: RunningApp, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> AsyncIterator[dict[str, Any]]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with app.client(limits=limits) as api, app.client(limits=limits) as pages:
        patient = await make_patient(sessions, settings)
        doctor = await make_doctor(sessions, settings, min_notice_minutes=0)
        yield {
            "api": Checker(sessions, api),
            "pages": Checker(sessions, pages),
            "patient": patient,
            "doctor": doctor,
            "auth": await token_for(api, patient),
            "doctor_auth": await token_for(api, doctor),
            "sessions": sessions,
            "settings": settings,
        }


async def test_nul_bytes_are_refused(world: dict[str, Any]) -> None:
    api, pages, doctor = world["api"], world["pages"], world["doctor"]
    auth = world["auth"]
    await api.refused("POST", "/api/v1/auth/login", json={"email": "a\x00@x.org", "password": "x"})
    patient = {
        "name": "Ada\x00",
        "email": "ada-nul@example.org",
        "password": "a long enough password 1",
        "date_of_birth": "1990-01-01",
    }
    await api.refused("POST", "/api/v1/patients", json=patient)
    slot = next_weekday_at(10).isoformat()
    booking = {"doctor_id": doctor.user_id, "starts_at": slot, "reason": "pain\x00"}
    await api.refused("POST", "/api/v1/appointments", json=booking, headers=auth)
    await api.refused("GET", "/api/v1/doctors", params={"name": "Dr\x00"}, headers=auth)

    token = await pages.csrf("/login")
    form = {"csrf_token": token, "email": "a\x00@x.org", "password": "x"}
    await pages.refused("POST", "/login", data=form, html=True)
    token = await pages.csrf("/register")
    form = {"csrf_token": token, **patient, "time_zone": "UTC"}
    await pages.refused("POST", "/register", data=form, html=True)
    await pages.refused("GET", "/doctors", params={"name": "Dr\x00"}, html=True)
    await pages.log_in_page(world["patient"])
    token = await pages.csrf("/doctors")
    form = {"csrf_token": token, **{k: str(v) for k, v in booking.items()}}
    await pages.refused("POST", "/book", data=form, html=True)


async def test_ids_past_64_bits_are_refused(world: dict[str, Any]) -> None:
    api, pages, auth = world["api"], world["pages"], world["auth"]
    for path in (
        f"/api/v1/appointments/{TOO_BIG}",
        f"/api/v1/patients/{TOO_BIG}",
        f"/api/v1/doctors/{TOO_BIG}/schedule",
        f"/api/v1/visits/{TOO_BIG}/notes",
        "/api/v1/appointments/0",
        "/api/v1/appointments/-1",
    ):
        await api.refused("GET", path, headers=auth)
    await api.refused("POST", f"/api/v1/appointments/{TOO_BIG}/cancel", json={}, headers=auth)
    slot = next_weekday_at(10).isoformat()
    booking = {"doctor_id": TOO_BIG, "starts_at": slot, "reason": "pain"}
    await api.refused("POST", "/api/v1/appointments", json=booking, headers=auth)
    await pages.log_in_page(world["patient"])
    await pages.refused("GET", f"/appointments/{TOO_BIG}", html=True)
    await pages.refused("GET", f"/doctors/{TOO_BIG}", html=True)
    await pages.refused("GET", "/book", params={"doctor_id": TOO_BIG, "starts_at": slot}, html=True)


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
async def test_dates_outside_the_window_are_refused(world: dict[str, Any], day: str) -> None:
    api, pages = world["api"], world["pages"]
    auth, doctor = world["auth"], world["doctor"]
    instant = f"{day}T00:00:00+00:00" if day.startswith("0") else f"{day}T23:00:00+00:00"
    slots = f"/api/v1/doctors/{doctor.user_id}/slots"
    ok_start = datetime.now(UTC).isoformat()
    await api.refused("GET", slots, params={"start": instant, "end": ok_start}, headers=auth)
    await api.refused("GET", slots, params={"start": ok_start, "end": instant}, headers=auth)
    booking = {"doctor_id": doctor.user_id, "starts_at": instant, "reason": "pain"}
    await api.refused("POST", "/api/v1/appointments", json=booking, headers=auth)
    good = {**booking, "starts_at": next_weekday_at(10).isoformat()}
    r = await api.http.post("/api/v1/appointments", json=good, headers=auth)
    assert r.status_code == 201, r.text
    appointment = r.json()["id"]
    move = f"/api/v1/appointments/{appointment}/reschedule"
    await api.refused("POST", move, json={"starts_at": instant}, headers=auth)
    await api.refused("GET", "/api/v1/appointments", params={"start": instant}, headers=auth)
    admin = await make_admin(world["sessions"], world["settings"])
    admin_auth = await token_for(api.http, admin)
    await api.refused("GET", "/api/v1/audit", params={"since": instant}, headers=admin_auth)
    patient_json = {
        "name": "Old",
        "email": f"old-{day}@example.org",
        "password": "a long enough password 1",
        "date_of_birth": day,
    }
    await api.refused("POST", "/api/v1/patients", json=patient_json)

    await pages.refused("GET", f"/doctors/{doctor.user_id}", params={"week": day}, html=True)
    await pages.log_in_page(world["patient"])
    await pages.refused(
        "GET", "/book", params={"doctor_id": doctor.user_id, "starts_at": instant}, html=True
    )
    token = await pages.csrf(f"/appointments/{appointment}")
    form = {"csrf_token": token, "starts_at": instant}
    await pages.refused("POST", f"/appointments/{appointment}/reschedule", data=form, html=True)
    await pages.http.post("/logout", data={"csrf_token": token})
    await pages.log_in_page(doctor)
    await pages.refused("GET", "/agenda", params={"date": day}, html=True)
    await pages.refused("GET", "/agenda", params={"date": day, "view": "week"}, html=True)
    await pages.http.post("/logout", data={"csrf_token": await pages.csrf("/agenda")})
    await pages.log_in_page(admin)
    await pages.refused("GET", "/admin/audit", params={"since": day}, html=True)
    await pages.refused("GET", "/admin/audit", params={"patient_id": TOO_BIG}, html=True)


@pytest.mark.parametrize("zone", ["Europe", "localtime", "America", "../../etc/passwd", "Nowhere"])
async def test_tz_that_names_no_zone_is_refused_on_pages(world: dict[str, Any], zone: str) -> None:
    pages, doctor = world["pages"], world["doctor"]
    for path in ("/", "/login", "/doctors", f"/doctors/{doctor.user_id}"):
        r = await pages.refused("GET", path, params={"tz": zone}, html=True)
        assert "time zone" in r.text
    r = await pages.http.get("/doctors", params={"tz": "Asia/Kolkata"})
    assert r.status_code == 200


async def test_ids_are_strict_integers(world: dict[str, Any]) -> None:
    api, auth, doctor = world["api"], world["auth"], world["doctor"]
    slot = next_weekday_at(10).isoformat()
    for bad in (True, 1.0, 1.5, "1.0", None):
        booking = {"doctor_id": bad, "starts_at": slot, "reason": "pain"}
        await api.refused("POST", "/api/v1/appointments", json=booking, headers=auth)
    weekly = [{"weekday": True, "start": "09:00", "end": "12:00"}]
    schedule = f"/api/v1/doctors/{doctor.user_id}/schedule"
    await api.refused("PUT", schedule, json={"weekly": weekly}, headers=world["doctor_auth"])


async def test_numbers_are_not_read_as_datetimes(world: dict[str, Any]) -> None:
    api, auth, doctor = world["api"], world["auth"], world["doctor"]
    slots = f"/api/v1/doctors/{doctor.user_id}/slots"
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for bad in ("0.5", "0", "1700000000"):
        await api.refused("GET", slots, params={"start": bad, "end": end}, headers=auth)
        await api.refused("GET", "/api/v1/appointments", params={"start": bad}, headers=auth)
    booking = {"doctor_id": doctor.user_id, "starts_at": 1700000000, "reason": "pain"}
    await api.refused("POST", "/api/v1/appointments", json=booking, headers=auth)


async def test_wall_clock_times_with_an_offset_are_refused(world: dict[str, Any]) -> None:
    api, doctor = world["api"], world["doctor"]
    schedule = f"/api/v1/doctors/{doctor.user_id}/schedule"
    for start, end in (("09:00+05:00", "12:00"), ("09:00", "12:00Z")):
        weekly = [{"weekday": 0, "start": start, "end": end}]
        await api.refused("PUT", schedule, json={"weekly": weekly}, headers=world["doctor_auth"])
    override = {"day": "2030-01-07", "kind": "extra", "start": "09:00+01:00", "end": "10:00"}
    await api.refused(
        "POST",
        f"/api/v1/doctors/{doctor.user_id}/overrides",
        json=override,
        headers=world["doctor_auth"],
    )


@pytest.mark.parametrize("zone", ["localtime", "Europe", "Factory", "posixrules/../UTC"])
async def test_time_zones_must_name_a_zone(world: dict[str, Any], zone: str) -> None:
    api, patient = world["api"], world["patient"]
    body = {
        "name": "Zed",
        "email": "zed@example.org",
        "password": "a long enough password 1",
        "date_of_birth": "1990-01-01",
        "time_zone": zone,
    }
    await api.refused("POST", "/api/v1/patients", json=body)
    await api.refused(
        "PATCH",
        f"/api/v1/patients/{patient.user_id}",
        json={"time_zone": zone},
        headers=world["auth"],
    )
    pages = world["pages"]
    token = await pages.csrf("/register")
    form = {"csrf_token": token, **body}
    await pages.refused("POST", "/register", data=form, html=True)


async def test_an_unexpected_error_answers_in_the_envelope_and_keeps_the_connection(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    import uvicorn

    from clinic.app import create_app
    from conftest import free_port

    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom", boom)
    app.add_api_route("/boom", boom)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    limits = httpx.Limits(max_connections=1)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as http:
            first = await http.get("/api/v1/boom")
            assert first.status_code == 500
            assert first.json() == {
                "error": {"code": "internal_error", "message": "Something went wrong."}
            }
            page = await http.get("/boom")
            assert page.status_code == 500
            assert page.headers["content-type"].startswith("text/html")
            after = await http.get("/healthz/live")
            assert after.status_code == 200
            sockets = [
                r.extensions["network_stream"].get_extra_info("socket").getsockname()
                for r in (first, page, after)
            ]
            assert len(set(sockets)) == 1, "the connection was dropped after the 500"
    finally:
        server.should_exit = True
        await task
    assert "unhandled error on GET /api/v1/boom" in caplog.text
