"""An empty visit note is refused with a message, on the API and on the page; nothing is
saved and nothing is dropped without a word."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from clinic.core.config import Settings
from clinic.visits.models import VisitNote
from factories import make_doctor, make_patient, token_for
from visits_fixtures import client, log_in, make_appointment, visit_settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings)


async def _ended_visit(app, http, sessions, settings):
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    d_auth, p_auth = await token_for(http, doctor), await token_for(http, patient)
    async with client([app.base_url], appt, p_auth), client([app.base_url], appt, d_auth) as d:
        await d.admit()
        await d.end()
        await d.wait_message(lambda m: m["type"] == "ended")
    return doctor, appt, d_auth


async def _note_count(sessions) -> int:
    async with sessions() as session:
        return int(
            (await session.execute(select(func.count()).select_from(VisitNote))).scalar_one()
        )


async def test_empty_note_is_refused_with_a_message(app, http, sessions, settings) -> None:
    doctor, appt, d_auth = await _ended_visit(app, http, sessions, settings)
    url = f"/api/v1/visits/{appt}/notes"
    for body in ("", "   \n\t "):
        r = await http.post(url, json={"body": body}, headers=d_auth)
        assert r.status_code == 422, r.text
        assert "Write the note first." in r.text
    assert await _note_count(sessions) == 0

    async with app.client() as browser:
        await log_in(browser, doctor.email)
        page = await browser.get(f"/appointments/{appt}")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        r = await browser.post(
            f"/visits/{appt}/note", data={"csrf_token": csrf.group(1), "note": "  \r\n "}
        )
        # The page answers the refusal itself: 422, the message next to the note field.
        assert r.status_code == 422, r.text
        assert 'id="note-error"' in r.text and "Write the note first." in r.text
        assert 'aria-invalid="true"' in r.text
    assert await _note_count(sessions) == 0
