"""The device check in headless Chromium (Debian's ``chromium``): with Chromium's fake camera
and microphone the preview plays and the level moves; with permission denied each device says
so in words. Reached from the waiting room."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clinic.core.config import Settings
from factories import PASSWORD, make_doctor, make_patient
from visits_fixtures import make_appointment, visit_settings

CHROMIUM = Path(os.environ.get("CLINIC_TEST_CHROMIUM", "/usr/bin/chromium"))
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
FAKE_DEVICES = "--use-fake-device-for-media-stream"
FAKE_CONSENT = "--use-fake-ui-for-media-stream"
AUTOPLAY = "--autoplay-policy=no-user-gesture-required"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]

PREVIEW_SIZE = (
    "() => { const v = document.getElementById('camera-preview');"
    " return v.videoWidth > 0 && v.videoHeight > 0; }"
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings)


async def test_fake_devices_from_the_waiting_room(app, sessions, settings) -> None:
    from playwright.async_api import async_playwright

    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    base = app.base_url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=[*BASE_ARGS, FAKE_DEVICES, FAKE_CONSENT, AUTOPLAY]
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/login")
            await page.fill("input[name=email]", patient.email)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_load_state()
            await page.goto(f"{base}/visits/{appt}")
            await page.click("#device-check-link")
            await page.wait_for_url(f"{base}/device-check?appointment={appt}")
            await page.wait_for_selector("#device-check[data-ready=true]")
            await page.click("#start-check")
            await page.wait_for_selector("#device-check[data-camera=ok]", timeout=15_000)
            await page.wait_for_function(PREVIEW_SIZE, timeout=15_000)
            await page.wait_for_selector("#device-check[data-mic=ok]", timeout=15_000)
            # Chromium's fake microphone beeps: the level meter hears it.
            await page.wait_for_selector("#device-check[data-mic-heard=true]", timeout=15_000)
            assert "camera works" in (await page.text_content("#camera-status") or "")
            await page.click("#play-tone")
            await page.wait_for_selector("#device-check[data-speaker=played]")
            assert "tone played" in (await page.text_content("#speaker-status") or "")
            await page.click("text=Back to the video visit")
            await page.wait_for_url(f"{base}/visits/{appt}")
        finally:
            await browser.close()


async def test_permission_denied_is_said_in_words(app) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # Fake devices exist, but nobody grants the page access to them.
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=[*BASE_ARGS, FAKE_DEVICES]
        )
        try:
            context = await browser.new_context(permissions=[])
            page = await context.new_page()
            await page.goto(f"{app.base_url}/device-check")
            await page.wait_for_selector("#device-check[data-ready=true]")
            await page.click("#start-check")
            await page.wait_for_selector("#device-check[data-camera=denied]", timeout=15_000)
            await page.wait_for_selector("#device-check[data-mic=denied]", timeout=15_000)
            camera = await page.text_content("#camera-status") or ""
            mic = await page.text_content("#mic-status") or ""
            assert "Access to your camera is blocked" in camera and "Allow it" in camera
            assert "Access to your microphone is blocked" in mic
            assert "Back to the video visit" not in await page.content()
        finally:
            await browser.close()
