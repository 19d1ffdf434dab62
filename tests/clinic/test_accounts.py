"""Registration, login throttling, cookie sessions with CSRF, sessions shared across instances."""

from __future__ import annotations

from sqlalchemy import func, select

from clinic.accounts.models import User
from conftest import serve
from factories import PASSWORD, make_patient

PATIENT = {
    "name": "Ada Patient",
    "email": "Ada@Example.org",
    "password": PASSWORD,
    "date_of_birth": "1990-05-01",
    "time_zone": "Europe/Berlin",
}


async def test_register_patient_email_is_case_insensitive_unique(http, sessions) -> None:
    r = await http.post("/api/v1/patients", json=PATIENT)
    assert r.status_code == 201 and r.json()["email"] == "ada@example.org"
    again = await http.post("/api/v1/patients", json={**PATIENT, "email": "ADA@example.ORG"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "email_taken"
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 1


async def test_registration_validates_every_field(http, sessions) -> None:
    cases = {
        "email": {**PATIENT, "email": "not-an-email"},
        "password": {**PATIENT, "password": "short"},
        "time_zone": {**PATIENT, "time_zone": "Mars/Olympus"},
        "date_of_birth": {**PATIENT, "date_of_birth": "2999-01-01"},
    }
    for field, body in cases.items():
        r = await http.post("/api/v1/patients", json=body)
        assert r.status_code == 422, (field, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_input" and field in (err.get("field") or err["message"]), err
    common = await http.post("/api/v1/patients", json={**PATIENT, "password": "password123"})
    assert common.status_code == 422 and "common" in common.json()["error"]["message"]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 0


async def test_doctor_registration_needs_approval(http) -> None:
    r = await http.post(
        "/api/v1/doctors",
        json={
            **{k: v for k, v in PATIENT.items() if k != "date_of_birth"},
            "specialty": "Neurology",
            "licence_number": "N-1",
            "bio": "hi",
        },
    )
    assert r.status_code == 201 and r.json()["role"] == "doctor"
    assert (await http.get("/api/v1/doctors", params={"specialty": "Neurology"})).json() == []


async def test_failed_logins_are_slowed_then_refused(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    for _ in range(settings.login_max_failures - 1):
        r = await http.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": "wrong-password"}
        )
        assert r.status_code == 401
    r = await http.post(
        "/api/v1/auth/login", json={"email": patient.email, "password": "wrong-password"}
    )
    assert r.status_code == 401
    locked = await http.post(
        "/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}
    )
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.json()["error"]["message"]
    assert int(locked.headers["retry-after"]) > 0


async def test_cookie_session_needs_csrf_for_api_changes(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    r = await http.post("/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    csrf = r.json()["csrf_token"]
    assert (await http.get("/api/v1/me")).json()["email"] == patient.email
    no_csrf = await http.patch(f"/api/v1/patients/{patient.user_id}", json={"name": "X"})
    assert no_csrf.status_code == 403 and no_csrf.json()["error"]["code"] == "csrf_failed"
    ok = await http.patch(
        f"/api/v1/patients/{patient.user_id}", json={"name": "X"}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 200 and ok.json()["name"] == "X"
    assert (
        await http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    ).status_code == 204
    assert (await http.get("/api/v1/me")).status_code == 401


async def test_secure_cookie_over_https(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    r = await http.post(
        "/api/v1/auth/login",
        json={"email": patient.email, "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
    )
    # uvicorn trusts X-Forwarded-Proto from the loopback router by default.
    assert "secure" in r.headers["set-cookie"].lower()


async def test_session_valid_on_another_instance(app, http, sessions, settings) -> None:
    """Instances share the secret, so a session from one is accepted by another."""
    patient = await make_patient(sessions, settings)
    r = await http.post("/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD})
    server, task, url = await serve(settings)
    try:
        import httpx

        async with httpx.AsyncClient(base_url=url, cookies=http.cookies) as other:
            me = await other.get("/api/v1/me")
            assert me.status_code == 200 and me.json()["id"] == patient.user_id
    finally:
        server.should_exit = True
        await task
    assert r.status_code == 200


async def test_error_body_shape_for_unknown_routes(http) -> None:
    r = await http.get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_password_whitespace_is_kept(http) -> None:
    pw = "  spaced out passphrase  "
    r = await http.post("/api/v1/patients", json={**PATIENT, "password": pw, "name": "  Ada  "})
    assert r.status_code == 201 and r.json()["name"] == "Ada"
    ok = await http.post("/api/v1/auth/login", json={"email": PATIENT["email"], "password": pw})
    assert ok.status_code == 200
    stripped = await http.post(
        "/api/v1/auth/login", json={"email": PATIENT["email"], "password": pw.strip()}
    )
    assert stripped.status_code == 401
