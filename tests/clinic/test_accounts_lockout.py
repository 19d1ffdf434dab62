"""Lockout per account and address, not per address: one person's typos lock only their own
account from their own address; the deploy's smoke login is never throttled by anyone else;
only a spray across many accounts locks an address; admins unlock."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from sqlalchemy import select

from clinic.accounts import lockout
from clinic.accounts.models import LoginThrottle
from clinic.core.config import Settings
from clinic.seed import SMOKE_PATIENT_EMAIL, seed_smoke
from clinic.smoke import run_smoke
from factories import PASSWORD, make_admin, make_patient, token_for
from visits_fixtures import log_in


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A low per-address limit, so the spray test is short (still above one person's)."""
    return settings.model_copy(update={"login_address_max_failures": 12})


async def login(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> int:
    r = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    return r.status_code


async def test_twenty_failures_of_another_user_block_neither_a_patient_nor_a_deploy(
    app, http, sessions, settings
) -> None:
    await seed_smoke(sessions, settings, settings.smoke_password)
    typist = await make_patient(sessions, settings)
    patient = await make_patient(sessions, settings)

    answers = [await login(http, typist.email, "wrong password") for _ in range(20)]
    limit = settings.login_max_failures
    assert answers[:limit] == [401] * limit
    assert set(answers[limit:]) == {429}  # the typist's own account, from here, is locked

    # Same address, other accounts: unaffected.
    assert await login(http, patient.email) == 200
    assert await login(http, SMOKE_PATIENT_EMAIL, settings.smoke_password) == 200
    lines: list[str] = []
    await asyncio.to_thread(run_smoke, app.base_url, settings.smoke_password, echo=lines.append)
    assert lines[-1] == "smoke: all steps passed"


async def test_a_locked_account_is_locked_only_from_its_address(http, sessions, settings) -> None:
    typist = await make_patient(sessions, settings)
    for _ in range(settings.login_max_failures):
        assert await login(http, typist.email, "wrong password") == 401
    assert await login(http, typist.email) == 429
    async with sessions() as s:
        keys = set(await s.scalars(select(LoginThrottle.key)))
    assert f"account:{typist.email}|127.0.0.1" in keys
    # From another address, the account's own key is untouched: nothing to wait for.
    other = lockout.keys_for(typist.email, "198.51.100.7", is_smoke=False)
    assert other.account not in keys


async def test_a_spray_across_accounts_locks_the_address_but_not_the_smoke_login(
    http, sessions, settings
) -> None:
    await seed_smoke(sessions, settings, settings.smoke_password)
    patient = await make_patient(sessions, settings)
    for n in range(settings.login_address_max_failures):
        assert await login(http, f"guess{n}@example.org", "password1") == 401
    r = await http.post("/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert await login(http, SMOKE_PATIENT_EMAIL, settings.smoke_password) == 200


async def test_smoke_failures_lock_only_the_smoke_account(http, sessions, settings) -> None:
    await seed_smoke(sessions, settings, settings.smoke_password)
    for _ in range(settings.login_max_failures):
        assert await login(http, SMOKE_PATIENT_EMAIL, "wrong password") == 401
    async with sessions() as s:
        keys = set(await s.scalars(select(LoginThrottle.key)))
    assert keys == {f"account:{SMOKE_PATIENT_EMAIL}|127.0.0.1"}


async def test_admin_unlocks_an_account_by_api_and_page(app, http, sessions, settings) -> None:
    typist = await make_patient(sessions, settings)
    admin = await make_admin(sessions, settings)
    admin_auth = await token_for(http, admin)

    async def lock() -> None:
        for _ in range(settings.login_max_failures):
            await login(http, typist.email, "wrong password")
        assert await login(http, typist.email) == 429

    await lock()
    listed = (await http.get("/api/v1/admin/lockouts", headers=admin_auth)).json()
    assert [(x["user_id"], x["address"]) for x in listed] == [(typist.user_id, "127.0.0.1")]
    patient_auth = await token_for(http, await make_patient(sessions, settings))
    forbidden = await http.post(
        f"/api/v1/admin/users/{typist.user_id}/unlock", headers=patient_auth
    )
    assert forbidden.status_code == 403
    assert await login(http, typist.email) == 429
    r = await http.post(f"/api/v1/admin/users/{typist.user_id}/unlock", headers=admin_auth)
    assert r.status_code == 204
    assert await login(http, typist.email) == 200
    missing = await http.post("/api/v1/admin/users/99999999/unlock", headers=admin_auth)
    assert missing.status_code == 404

    await lock()
    async with app.client() as browser:
        await log_in(browser, admin.email)
        page = await browser.get("/admin/lockouts")
        assert page.status_code == 200 and typist.email in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        r = await browser.post(
            f"/admin/users/{typist.user_id}/unlock", data={"csrf_token": csrf.group(1)}
        )
        assert r.status_code == 303 and r.headers["location"] == "/admin/lockouts"
        assert typist.email not in (await browser.get("/admin/lockouts")).text
    assert await login(http, typist.email) == 200


async def test_guessing_the_current_password_from_a_session_is_locked_out_too(
    app, sessions, settings
) -> None:
    # A stolen session must not become a way to guess the password without the login's
    # lockout: wrong current passwords count like failed logins, and then even the right
    # one is refused (429) until the lock expires; the password is unchanged.
    patient = await make_patient(sessions, settings)
    async with app.client() as thief:
        r = await thief.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}
        )
        csrf = r.json()["csrf_token"]

        async def change(current: str) -> httpx.Response:
            return await thief.post(
                "/api/v1/auth/password",
                json={"current_password": current, "new_password": "a brand new passphrase"},
                headers={"X-CSRF-Token": csrf},
            )

        answers = [
            (await change(f"guess {n}")).status_code for n in range(settings.login_max_failures)
        ]
        assert answers == [422] * settings.login_max_failures
        locked = await change(PASSWORD)
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert "Too many wrong passwords" in locked.json()["error"]["message"]
    async with app.client() as owner:
        r = await owner.post(
            "/api/v1/auth/login", json={"email": patient.email, "password": PASSWORD}
        )
        assert r.status_code == 429  # same address: the account is locked here, not changed
