"""A video visit in a real browser: headless Chromium (Debian's ``chromium``) with a fake camera
and microphone opens the patient's and the doctor's visit pages; the doctor admits the patient;
each page's remote video reaches a non-zero size; the doctor ends the visit. Once straight to
the app, once over HTTPS through Envoy (bluegreen's data plane, self-signed certificate): the
secure context real users need for the camera, with a Secure session cookie."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bluegreen_harness import HttpsApp, https_app

from clinic.appointments.models import Appointment
from clinic.core.config import Settings
from clinic.web.sessions import COOKIE as SESSION_COOKIE
from factories import PASSWORD, make_doctor, make_patient
from visits_fixtures import make_appointment, visit_settings

CHROMIUM = Path(os.environ.get("CLINIC_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--ignore-certificate-errors",  # Envoy's generated self-signed certificate
]

__all__ = ["https_app"]  # the fixture, imported so pytest finds it here

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings)  # no STUN: there is no network here, host candidates do


async def _log_in(page, base: str, email: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()


REMOTE_SIZE = (
    "() => { const v = document.getElementById('remote-video');"
    " return v && v.videoWidth > 0 && v.videoHeight > 0; }"
)


async def test_patient_and_doctor_see_each_other(app, sessions, settings) -> None:
    await _video_visit(app.base_url, sessions, settings)


async def test_video_visit_over_https_through_envoy(
    https_app: HttpsApp, sessions, settings
) -> None:
    assert https_app.base_url.startswith("https://")
    cookies = await _video_visit(https_app.base_url, sessions, settings)
    session = [c for c in cookies if c["name"] == SESSION_COOKIE]
    assert session and all(c["secure"] for c in session), cookies


async def _video_visit(base: str, sessions, settings) -> list:
    """The call between a patient and a doctor at ``base``; the patient's cookies."""
    from playwright.async_api import async_playwright

    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    cookies: list = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            pages = {}
            for who, actor in (("patient", patient), ("doctor", doctor)):
                context = await browser.new_context()
                page = await context.new_page()
                page.on("dialog", lambda dialog: dialog.accept())
                await _log_in(page, base, actor.email)
                await page.goto(f"{base}/appointments/{appt}")
                await page.click("#join-visit")
                await page.wait_for_selector("#visit[data-signalling=connected]")
                pages[who] = page
            p, d = pages["patient"], pages["doctor"]
            cookies = await p.context.cookies()
            assert "waiting room" in (await p.text_content("#visit-notice") or "")
            await d.wait_for_selector("#admit:not([disabled])", timeout=10_000)
            assert "waiting" in (await d.text_content("#visit-notice") or "")
            await d.click("#admit")
            for page in (p, d):
                await page.wait_for_function(REMOTE_SIZE, timeout=30_000)
                await page.wait_for_selector("#visit[data-connection=connected]", timeout=30_000)
                size = await page.evaluate(
                    "() => { const v = document.getElementById('remote-video');"
                    " return [v.videoWidth, v.videoHeight]; }"
                )
                assert size[0] > 0 and size[1] > 0
            assert await p.get_attribute("#visit", "data-admitted") == "true"

            await d.click("#end")
            for page in (p, d):
                await page.wait_for_url(f"{base}/appointments/{appt}", timeout=10_000)
        finally:
            await browser.close()
    async with sessions() as session:
        appointment = await session.get(Appointment, appt)
        assert appointment is not None and appointment.status == "completed"
    return cookies


async def test_a_refused_camera_is_explained(app, sessions, settings) -> None:
    from playwright.async_api import async_playwright

    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    refusing = [a for a in ARGS if a != "--use-fake-ui-for-media-stream"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=refusing)
        try:
            context = await browser.new_context(permissions=[])
            page = await context.new_page()
            await _log_in(page, app.base_url, patient.email)
            await page.goto(f"{app.base_url}/visits/{appt}")
            await page.wait_for_selector("#visit[data-media=refused]", timeout=15_000)
            # Still joins the waiting room (to receive the doctor's video), and the message
            # stays visible next to the waiting-room notice.
            await page.wait_for_selector("#visit[data-signalling=connected]")
            await page.wait_for_function(
                "() => document.getElementById('visit-notice').textContent.includes('waiting')"
            )
            problem = page.locator("#media-error")
            assert await problem.is_visible()
            text = await problem.text_content() or ""
            assert "refused" in text and "settings" in text
        finally:
            await browser.close()
