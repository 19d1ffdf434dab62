"""Appointments in a real browser (Debian's chromium, launched as the video tests do): a
patient moves an appointment by clicking a free time with the mouse, and cancels one through
the confirmation step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_video_browser import ARGS, CHROMIUM

from clinic.appointments.models import Appointment
from factories import PASSWORD, make_doctor, make_patient
from visits_fixtures import make_appointment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]


async def log_in(page, base: str, email: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()


async def test_reschedule_by_mouse_click(app, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(
        sessions, doctor=doctor, patient=patient, starts_in=timedelta(days=3)
    )
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await (
                await browser.new_context(viewport={"width": 1280, "height": 900})
            ).new_page()
            await log_in(page, app.base_url, patient.email)
            await page.goto(f"{app.base_url}/appointments/{appt}")
            box = await page.locator(".slots-box").bounding_box()
            assert box is not None and box["height"] > 100, box  # was 0 px tall
            choice = page.locator(".slots-box .choices label").nth(3)
            wanted = await choice.locator("input").get_attribute("value")
            assert wanted is not None
            await choice.scroll_into_view_if_needed()
            await choice.click()  # a real mouse click on the label
            assert await choice.locator("input").is_checked()
            await page.click("text=Move the appointment")
            await page.wait_for_selector(".flash")
            assert "The appointment is moved." in (await page.text_content(".flash") or "")
        finally:
            await browser.close()
    async with sessions() as session:
        moved = await session.get(Appointment, appt)
        assert moved is not None
        assert moved.starts_at == datetime.fromisoformat(wanted).astimezone(UTC)


async def test_cancel_with_confirmation(app, sessions, settings) -> None:
    """Without JavaScript too: the link leads to a confirmation page; "No, keep it" changes
    nothing; "Yes" cancels, and the list shows it under Cancelled."""
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(
        sessions, doctor=doctor, patient=patient, starts_in=timedelta(days=3)
    )
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(java_script_enabled=False)
            page = await context.new_page()
            await log_in(page, app.base_url, patient.email)
            await page.goto(f"{app.base_url}/appointments/{appt}")
            await page.click("#cancel-link")
            await page.wait_for_url(f"{app.base_url}/appointments/{appt}/cancel")
            await page.click("text=No, keep it")
            await page.wait_for_url(f"{app.base_url}/appointments/{appt}")
            async with sessions() as session:
                kept = await session.get(Appointment, appt)
                assert kept is not None and kept.status == "booked"

            await page.click("#cancel-link")
            await page.fill("textarea[name=reason]", "Feeling better")
            await page.click("text=Yes, cancel the appointment")
            await page.wait_for_selector(".flash")
            assert "The appointment is cancelled." in (await page.text_content(".flash") or "")
            await page.goto(f"{app.base_url}/appointments")
            cancelled = page.locator("h2:text('Cancelled') + table")
            assert await cancelled.locator(f"a[href='/appointments/{appt}']").count() > 0
        finally:
            await browser.close()
    async with sessions() as session:
        gone = await session.get(Appointment, appt)
        assert gone is not None and gone.status == "cancelled"
        assert gone.cancel_reason == "Feeling better"
