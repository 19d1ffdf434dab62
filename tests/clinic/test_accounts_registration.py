"""Registration: the browser's time zone is the default (checked by the server), the new
patient is logged in at once, and their email address is confirmed through the outbox before
the first booking (a clear 403 until then, on the API and the booking page)."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select

from clinic.accounts.models import User
from clinic.appointments.models import Appointment
from factories import PASSWORD, make_doctor, next_weekday_at
from notify_fixtures import eventually


async def csrf_from(http: httpx.AsyncClient, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await http.get(path)).text)
    assert found
    return found.group(1)


def form(token: str, email: str, **overrides: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "name": "Nora York",
        "email": email,
        "password": PASSWORD,
        "date_of_birth": "1980-02-03",
        "time_zone": "",
        "time_zone_other": "",
        "browser_time_zone": "America/New_York",
    } | overrides


async def zone_of(sessions, email: str) -> str:
    async with sessions() as s:
        zone = await s.scalar(select(User.time_zone).where(User.email == email))
    assert zone is not None
    return zone


async def test_browser_zone_is_the_default_and_the_patient_is_logged_in(app, sessions) -> None:
    async with app.client() as browser:
        page = await browser.get("/register")
        assert 'name="browser_time_zone"' in page.text and "resolvedOptions().timeZone" in page.text
        token = await csrf_from(browser, "/register")
        r = await browser.post("/register", data=form(token, "nora@example.org"))
        assert r.status_code == 303 and r.headers["location"] == "/doctors"
        me = await browser.get("/api/v1/me")
        assert me.status_code == 200
        assert me.json()["email"] == "nora@example.org" and me.json()["email_verified"] is False
    assert await zone_of(sessions, "nora@example.org") == "America/New_York"

    cases = {
        "bogus@example.org": ({"browser_time_zone": "Mars/Olympus"}, "UTC"),
        "folder@example.org": ({"browser_time_zone": "Europe"}, "UTC"),
        "chosen@example.org": ({"time_zone": "Asia/Tokyo"}, "Asia/Tokyo"),
        "typed@example.org": ({"time_zone_other": "America/Bogota"}, "America/Bogota"),
    }
    for email, (overrides, expected) in cases.items():
        async with app.client() as browser:
            token = await csrf_from(browser, "/register")
            r = await browser.post("/register", data=form(token, email, **overrides))
            assert r.status_code == 303, (email, r.text)
        assert await zone_of(sessions, email) == expected, email


async def test_booking_waits_for_the_confirmed_email(app, http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    r = await http.post(
        "/api/v1/patients",
        json={
            "name": "Vera Verify",
            "email": "vera@example.org",
            "password": PASSWORD,
            "date_of_birth": "1990-01-01",
        },
    )
    assert r.status_code == 201 and r.json()["email_verified"] is False
    r = await http.post(
        "/api/v1/auth/token", json={"email": "vera@example.org", "password": PASSWORD}
    )
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    body = {
        "doctor_id": doctor.user_id,
        "starts_at": next_weekday_at(10).isoformat(),
        "reason": "check-up",
    }
    refused = await http.post("/api/v1/appointments", json=body, headers=auth)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "email_not_verified" and "vera@example.org" in error["message"]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 0

    link = await emailed_link_to_verify(sessions, "vera@example.org")
    bad = await http.post("/api/v1/auth/verify-email", json={"token": link + "x"})
    assert bad.status_code == 422
    token = link.split("token=", 1)[1]
    assert (await http.post("/api/v1/auth/verify-email", json={"token": token})).status_code == 204
    booked = await http.post("/api/v1/appointments", json=body, headers=auth)
    assert booked.status_code == 201, booked.text


async def test_the_booking_page_says_why_and_the_link_unlocks_it(app, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    start = next_weekday_at(11)
    async with app.client() as browser:
        token = await csrf_from(browser, "/register")
        r = await browser.post("/register", data=form(token, "paul@example.org"))
        assert r.status_code == 303
        booking = {
            "csrf_token": token,
            "doctor_id": str(doctor.user_id),
            "starts_at": start.isoformat(),
            "reason": "back pain",
        }
        token = await csrf_from(browser, "/account")
        booking["csrf_token"] = token
        assert "Send the link again" in (await browser.get("/account")).text
        r = await browser.post("/book", data=booking)
        assert r.status_code == 403 and "Confirm your email address" in r.text

        link = await emailed_link_to_verify(sessions, "paul@example.org")
        r = await browser.get(link)
        assert r.status_code == 303 and r.headers["location"] == "/doctors"
        r = await browser.post("/book", data=booking)
        assert r.status_code == 303 and r.headers["location"].startswith("/appointments/")


async def emailed_link_to_verify(sessions, email: str) -> str:
    from clinic.notify.models import OutboxMessage

    found: list[str] = []

    async def arrived() -> bool:
        async with sessions() as s:
            body = await s.scalar(
                select(OutboxMessage.body).where(
                    OutboxMessage.recipient == email,
                    OutboxMessage.subject == "Confirm your email address",
                )
            )
        match = re.search(r"(http\S+/verify-email\?token=\S+)", body or "")
        if match:
            found.append(match.group(1))
        return bool(match)

    await eventually(arrived, timeout=30)
    return found[-1]
