"""An admin approves one doctor's sign-up and rejects another's with a reason, in headless
Chromium (Debian's ``chromium``); each doctor gets the email."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from clinic.accounts.models import Doctor
from clinic.notify.models import OutboxMessage
from factories import PASSWORD, make_admin, make_doctor
from notify_fixtures import eventually

CHROMIUM = Path(os.environ.get("CLINIC_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]


async def _subjects(sessions, address: str) -> list[str]:
    async with sessions() as s:
        return list(
            await s.scalars(select(OutboxMessage.subject).where(OutboxMessage.recipient == address))
        )


async def test_admin_approves_and_rejects_in_the_browser(app, sessions, settings) -> None:
    from playwright.async_api import async_playwright

    admin = await make_admin(sessions, settings)
    good = await make_doctor(sessions, settings, name="Dr. Grace Good", approved=False)
    bad = await make_doctor(sessions, settings, name="Dr. Bob Bogus", approved=False)
    base = app.base_url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/login")
            await page.fill("input[name=email]", admin.email)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_load_state()
            await page.click("text=Doctor sign-ups")  # from the admin menu
            await page.wait_for_url(f"{base}/admin/sign-ups")

            await page.click(f"#approve-{good.user_id}")
            await page.wait_for_selector("text=Dr. Grace Good is approved")
            assert await page.locator(f"#sign-up-{good.user_id}").count() == 0

            card = page.locator(f"#sign-up-{bad.user_id}")
            await card.get_by_label("Reason for rejecting").fill("No such licence in the register.")
            await card.get_by_role("button", name="Reject").click()
            await page.wait_for_selector("text=Dr. Bob Bogus is rejected")
            card = page.locator(f"#sign-up-{bad.user_id}")
            assert await card.get_attribute("data-state") == "rejected"
            assert "No such licence in the register." in (await card.text_content() or "")
        finally:
            await browser.close()

    async with sessions() as s:
        approved = await s.get(Doctor, good.user_id)
        rejected = await s.get(Doctor, bad.user_id)
        assert approved is not None and approved.approved_at is not None
        assert rejected is not None and rejected.approved_at is None

    async def both_told() -> bool:
        return await _subjects(sessions, good.email) == [
            "Your doctor account is approved"
        ] and await _subjects(sessions, bad.email) == ["Your doctor account was not approved"]

    await eventually(both_told, timeout=20)
