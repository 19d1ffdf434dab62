"""Password reset by email, through the outbox the demo uses: the same answer for known and
unknown addresses, a single-use expiring token stored only as a digest, every session ended,
an audit entry; the page journey end to end."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select, update

from clinic.accounts.models import PasswordReset
from clinic.core.audit import AuditRecord
from clinic.core.db import utcnow
from clinic.core.security import token_digest
from clinic.notify.models import OutboxMessage
from factories import PASSWORD, make_patient
from notify_fixtures import eventually

NEW_PASSWORD = "a brand new passphrase 2026"


async def emailed_link(sessions, email: str) -> str:
    """The reset link in the newest outbox message to ``email`` (waits for the job)."""
    found: list[str] = []

    async def arrived() -> bool:
        async with sessions() as s:
            body = await s.scalar(
                select(OutboxMessage.body)
                .where(OutboxMessage.recipient == email)
                .order_by(OutboxMessage.id.desc())
                .limit(1)
            )
        if body is None:
            return False
        match = re.search(r"(http\S+/password-reset/confirm\?token=\S+)", body)
        assert match, body
        found.append(match.group(1))
        return True

    await eventually(arrived, timeout=30)
    return found[-1]


def token_of(link: str) -> str:
    return link.split("token=", 1)[1]


async def test_reset_by_api_is_single_use_and_ends_every_session(
    app, http, sessions, settings
) -> None:
    patient = await make_patient(sessions, settings)
    async with app.client() as thief:
        r = await thief.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}
        )
        assert r.status_code == 200

        known = await http.post("/api/v1/auth/password-reset", json={"email": patient.email})
        unknown = await http.post(
            "/api/v1/auth/password-reset", json={"email": "nobody@example.org"}
        )
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()

        link = await emailed_link(sessions, patient.email)
        assert link.startswith(app.base_url)
        token = token_of(link)
        async with sessions() as s:
            stored = list(await s.scalars(select(PasswordReset.token_hash)))
        assert stored == [token_digest(token)]  # the digest only, never the token

        r = await http.post(
            "/api/v1/auth/password-reset/confirm",
            json={"token": token, "new_password": NEW_PASSWORD},
        )
        assert r.status_code == 204, r.text
        assert (await thief.get("/api/v1/me")).status_code == 401

    again = await http.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": "yet another passphrase 77"},
    )
    assert again.status_code == 422 and again.json()["error"]["field"] == "token"
    old = await http.post("/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD})
    assert old.status_code == 401
    new = await http.post(
        "/api/v1/auth/login", json={"email": patient.email, "password": NEW_PASSWORD}
    )
    assert new.status_code == 200
    async with sessions() as s:
        audited = await s.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.subject == "password", AuditRecord.patient_id == patient.user_id)
        )
    assert audited == 1


async def test_expired_forged_and_weak(app, http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    await http.post("/api/v1/auth/password-reset", json={"email": patient.email})
    token = token_of(await emailed_link(sessions, patient.email))

    weak = await http.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"}
    )
    assert weak.status_code == 422 and weak.json()["error"]["field"] == "new_password"
    forged = await http.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token + "x", "new_password": NEW_PASSWORD},
    )
    assert forged.status_code == 422 and forged.json()["error"]["field"] == "token"

    async with sessions() as s, s.begin():
        await s.execute(update(PasswordReset).values(expires_at=utcnow()))
    expired = await http.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert expired.status_code == 422 and expired.json()["error"]["field"] == "token"
    assert (
        await http.post("/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD})
    ).status_code == 200


async def test_reset_journey_through_the_pages(app, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    async with app.client() as browser:
        login = await browser.get("/login")
        assert 'href="/password-reset"' in login.text
        form = await browser.get("/password-reset")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf
        r = await browser.post(
            "/password-reset", data={"csrf_token": csrf.group(1), "email": patient.email}
        )
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert "a link to choose a new password" in (await browser.get("/login")).text

        link = await emailed_link(sessions, patient.email)
        page = await browser.get(link)
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        r = await browser.post(
            "/password-reset/confirm",
            data={"csrf_token": csrf.group(1), "token": token_of(link), "new_password": "x"},
        )
        assert r.status_code == 422 and "at least" in r.text
        r = await browser.post(
            "/password-reset/confirm",
            data={
                "csrf_token": csrf.group(1),
                "token": token_of(link),
                "new_password": NEW_PASSWORD,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/login"

    async with httpx.AsyncClient(base_url=app.base_url) as fresh:
        r = await fresh.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": NEW_PASSWORD}
        )
        assert r.status_code == 200
