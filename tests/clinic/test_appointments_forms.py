"""Form errors in plain words: at the top of the form and next to the field, never the
validator's own text ("Input should be a valid date or datetime, input is too short")."""

from __future__ import annotations

import re
from datetime import date, datetime

import pytest
from pydantic import BaseModel, Field, ValidationError
from test_pages import book_directly, csrf_from, csrf_of, log_in

from clinic.web.pages import validation_errors
from factories import make_doctor, make_patient, next_weekday_at


class _Form(BaseModel):
    name: str = Field(min_length=1, max_length=5)
    born: date
    starts_at: datetime
    count: int = Field(ge=1)


def _errors(**fields: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        _Form.model_validate(fields)
    return validation_errors(caught.value)


def test_validator_text_becomes_plain_words() -> None:
    empty = _errors(name="", born="", starts_at="", count="")
    assert set(empty.values()) == {"Please fill this in."}
    bad = _errors(name="toolong", born="14.3.1990", starts_at="soon", count="0")
    assert bad == {
        "name": "Use at most 5 characters.",
        "born": "Enter a date, like 2026-03-14.",
        "starts_at": "Choose a date and a time.",
        "count": "Enter a number at least 1.",
    }
    assert not any("Input should" in m for m in (*empty.values(), *bad.values()))


def _summary(page: str) -> str:
    found = re.search(r'<div class="error-summary".*?</div>', page, re.S)
    assert found, "no error summary on the page"
    return found.group(0)


async def test_an_empty_registration_is_explained_at_the_top_and_by_each_field(http) -> None:
    token = await csrf_from(http, "/register")
    r = await http.post(
        "/register",
        data={"csrf_token": token, "name": "", "email": "", "password": "", "date_of_birth": ""},
    )
    assert r.status_code == 422
    assert "Input should" not in r.text and "too short" not in r.text
    summary = _summary(r.text)
    assert 'href="#date_of_birth-error">Date of birth: Please fill this in.' in summary
    assert 'id="date_of_birth-error">Please fill this in.</p>' in r.text
    # the summary comes before the form's first field
    assert r.text.index("error-summary") < r.text.index('name="name"')


async def test_reschedule_without_a_time_says_so_above_the_free_times(
    http, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appointment_id = await book_directly(sessions, patient, doctor, next_weekday_at(9), "Rash")
    await log_in(http, patient.email)
    page = await http.get(f"/appointments/{appointment_id}")
    r = await http.post(
        f"/appointments/{appointment_id}/reschedule", data={"csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 422
    assert "Time: Choose one of the free times." in _summary(r.text)
    # next to the list, but outside its scrolling box (where it used to be invisible)
    error = r.text.index('id="starts_at-error"')
    box = r.text.index('class="field slots-box')
    assert error < box


async def test_a_refused_address_explains_itself_in_words_on_the_html_page(
    http, sessions, settings
) -> None:
    patient = await make_patient(sessions, settings)
    await log_in(http, patient.email)
    page = await http.get("/appointments/abc", headers={"accept": "text/html"})
    assert page.status_code == 422
    assert "Appointment id: Must be an integer" in page.text
    assert "Value error" not in page.text and "appointment_id" not in page.text
    api = await http.get("/api/v1/appointments/abc")
    assert api.status_code == 422
    assert api.json()["error"]["fields"][0]["field"] == "appointment_id"  # the API is unchanged
