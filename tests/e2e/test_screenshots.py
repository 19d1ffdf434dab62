"""Screenshots of the main pages, written to docs/screenshots/ by a real browser (Debian's
chromium, launched as the video tests do), so a reviewer can look at the clinic without
running it. Each run overwrites them; the test checks every page rendered and was written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from test_browser_appointments import log_in
from test_video_browser import ARGS, CHROMIUM

from clinic.accounts.guards import Actor
from clinic.appointments.models import Appointment
from factories import make_doctor, make_patient, next_weekday_at

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]


async def _appointment(
    sessions, doctor: Actor, patient: Actor, starts_at: datetime, status: str, reason: str
) -> int:
    """Written directly: a past one cannot be booked, and round times look like a clinic's."""
    async with sessions() as session, session.begin():
        appointment = Appointment(
            doctor_id=doctor.user_id,
            patient_id=patient.user_id,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=30),
            buffer_ends_at=starts_at + timedelta(minutes=30),
            status=status,
            reason=reason,
        )
        session.add(appointment)
        await session.flush()
        return appointment.id


async def test_screenshots_of_the_main_pages(app, sessions, settings) -> None:
    from playwright.async_api import async_playwright

    doctor = await make_doctor(sessions, settings, name="Dr. Anna Weber", specialty="Dermatology")
    await make_doctor(sessions, settings, name="Dr. Jonas Berg", specialty="Cardiology")
    patient = await make_patient(sessions, settings, name="Maria Rossi")
    appt = await _appointment(
        sessions, doctor, patient, next_weekday_at(11, days_ahead=2), "booked", "Itchy rash"
    )
    await _appointment(
        sessions, doctor, patient, next_weekday_at(9, days_ahead=-9), "completed", "Check-up"
    )
    await _appointment(
        sessions, doctor, patient, next_weekday_at(15, days_ahead=5), "cancelled", "Follow-up"
    )
    slot = next_weekday_at(10, days_ahead=4)
    book = "/book?" + urlencode({"doctor_id": doctor.user_id, "starts_at": slot.isoformat()})
    week = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots: dict[str, list[tuple[str, str]]] = {
        "": [
            ("home", "/"),
            ("login", "/login"),
            ("register", "/register"),
            (
                "register-errors",
                "",
            ),  # the same form sent empty: errors at its top and by each field
        ],
        patient.email: [
            ("doctor-search", "/doctors"),
            ("doctor-slots", f"/doctors/{doctor.user_id}"),
            ("booking-confirm", book),
            ("appointments-list", "/appointments"),
            ("appointment", f"/appointments/{appt}"),
            ("reschedule", ""),  # the appointment page's form, a time chosen
            ("cancel-confirm", f"/appointments/{appt}/cancel"),
        ],
        doctor.email: [("doctor-agenda", f"/agenda?view=week&date={week}")],
    }
    written = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for who, pages in shots.items():
                context = await browser.new_context(viewport={"width": 1280, "height": 860})
                page = await context.new_page()
                if who:
                    await log_in(page, app.base_url, who)
                for name, path in pages:
                    if path:
                        response = await page.goto(app.base_url + path)
                        assert response is not None and response.status == 200, (name, path)
                    target = SCREENSHOTS / f"{name}.png"
                    if name == "register-errors":
                        await page.eval_on_selector_all(
                            "[required]", "els => els.forEach(e => e.removeAttribute('required'))"
                        )
                        await page.click("form[action='/register'] button[type=submit]")
                        await page.wait_for_selector(".error-summary")
                        await page.screenshot(path=str(target), full_page=True)
                    elif name == "reschedule":
                        form = page.locator("form[action$='/reschedule']")
                        await form.locator(".choices label").nth(2).click()
                        await form.screenshot(path=str(target))
                    else:
                        await page.screenshot(path=str(target), full_page=True)
                    written.append(target)
                await context.close()
        finally:
            await browser.close()
    for target in written:
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", target
        assert target.stat().st_size > 5_000, target  # a page, not a blank image
