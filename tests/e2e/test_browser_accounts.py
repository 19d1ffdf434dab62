"""Accounts in a real browser (headless Chromium, Debian's ``chromium``): registration in a
browser whose zone is America/New_York stores that zone and leaves the patient logged in;
the password reset journey runs through the outbox as a person would follow it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from clinic.accounts.models import User
from clinic.notify.models import OutboxMessage
from factories import PASSWORD, make_patient
from notify_fixtures import eventually

CHROMIUM = Path(os.environ.get("CLINIC_TEST_CHROMIUM", "/usr/bin/chromium"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]


async def test_registration_in_a_new_york_browser(app, sessions) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = await browser.new_context(timezone_id="America/New_York")
            page = await context.new_page()
            await page.goto(f"{app.base_url}/register")
            option = await page.text_content("#browser-zone-option")
            assert option is not None and "America/New_York" in option
            await page.fill("#name", "Nora York")
            await page.fill("#email", "nora@example.org")
            await page.fill("#password", PASSWORD)
            await page.fill("#date_of_birth", "1980-02-03")
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{app.base_url}/doctors")
            assert "nora@example.org" in (await page.content())
            me = await page.request.get(f"{app.base_url}/api/v1/me")
            assert me.status == 200 and (await me.json())["time_zone"] == "America/New_York"
        finally:
            await browser.close()
    async with sessions() as s:
        zone = await s.scalar(select(User.time_zone).where(User.email == "nora@example.org"))
    assert zone == "America/New_York"


async def test_password_reset_journey_through_the_outbox(app, sessions, settings) -> None:
    from playwright.async_api import async_playwright

    patient = await make_patient(sessions, settings)
    new_password = "brand new browser passphrase"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{app.base_url}/login")
            await page.click("text=Forgot your password?")
            await page.fill("#email", patient.email)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{app.base_url}/login")
            assert "a link to choose a new password" in await page.content()

            links: list[str] = []

            async def emailed() -> bool:
                async with sessions() as s:
                    body = await s.scalar(
                        select(OutboxMessage.body).where(OutboxMessage.recipient == patient.email)
                    )
                found = re.search(r"(http\S+/password-reset/confirm\?token=\S+)", body or "")
                links.extend([found.group(1)] if found else [])
                return found is not None

            await eventually(emailed, timeout=30)
            await page.goto(links[-1])
            await page.fill("#new_password", new_password)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{app.base_url}/login")
            await page.fill("#email", patient.email)
            await page.fill("#password", new_password)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{app.base_url}/appointments")
        finally:
            await browser.close()
