"""HTTPS end to end: the clinic behind bluegreen's data plane (Envoy, with the self-signed
certificate it generates) — log in and book over HTTPS; the session cookie is Secure because
Envoy tells the app the request came over HTTPS (``X-Forwarded-Proto``)."""

from __future__ import annotations

import ssl
from datetime import timedelta

import httpx
from bluegreen_harness import HttpsApp, https_app

from factories import PASSWORD, make_doctor, make_patient, next_weekday_at

__all__ = ["https_app"]  # the fixture, imported so pytest finds it here


async def test_log_in_and_book_over_https_with_a_secure_cookie(
    https_app: HttpsApp, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    trust = ssl.create_default_context(cafile=str(https_app.cert))  # the generated one, verified
    async with httpx.AsyncClient(
        base_url=https_app.base_url, verify=trust, trust_env=False, timeout=20
    ) as https:
        login = await https.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        day = next_weekday_at(0)
        slots = await https.get(
            f"/api/v1/doctors/{doctor.user_id}/slots",
            params={"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()},
        )
        assert slots.status_code == 200, slots.text
        first = slots.json()["slots"][0]["starts_at"]
        booked = await https.post(
            "/api/v1/appointments",
            json={"doctor_id": doctor.user_id, "starts_at": first, "reason": "over https"},
            headers=csrf,
        )
        assert booked.status_code == 201, booked.text
        assert booked.json()["status"] == "booked"
        mine = await https.get("/api/v1/appointments")
        assert [a["reason"] for a in mine.json()] == ["over https"]
