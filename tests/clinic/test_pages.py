"""The HTML pages over real HTTP: forms, CSRF, errors next to fields, booking, schedules."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.accounts.guards import Actor
from clinic.accounts.models import Doctor, User
from clinic.appointments import service as appointments
from clinic.appointments.models import Appointment
from factories import PASSWORD, make_admin, make_doctor, make_patient, next_weekday_at

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name}"
    return html.unescape(found.group(1))


def field_container(page: str, name: str) -> str:
    """The ``<div class="field">`` holding the input called ``name``."""
    for block in re.findall(r'<div class="field[^"]*">.*?</div>', page, flags=re.DOTALL):
        if f'name="{name}"' in block:
            return str(block)
    raise AssertionError(f"no field container for {name}")


async def csrf_from(http: httpx.AsyncClient, path: str) -> str:
    r = await http.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


async def log_in(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    token = await csrf_from(http, "/login")
    r = await http.post("/login", data={"csrf_token": token, "email": email, "password": password})
    assert r.status_code == 303, r.text
    return r


def registration(token: str, **overrides: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "name": "Ada Patient",
        "email": "ada@example.org",
        "password": PASSWORD,
        "date_of_birth": "1985-04-12",
        "time_zone": "Europe/Berlin",
        "time_zone_other": "",
    }
    return form | overrides


async def count_users(sessions: async_sessionmaker[AsyncSession], email: str) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).where(User.email == email)) or 0)


async def count_appointments(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Appointment)) or 0)


async def book_directly(
    sessions: async_sessionmaker[AsyncSession],
    patient: Actor,
    doctor: Actor,
    starts_at: datetime,
    reason: str,
) -> int:
    async with sessions() as session:
        view, _ = await appointments.book_appointment(
            session=session,
            actor=patient,
            doctor_id=doctor.user_id,
            starts_at=starts_at,
            reason=reason,
            idempotency_key=None,
        )
    return view.appointment.id


async def test_register_then_log_in_shows_my_appointments(http, sessions) -> None:
    home = await http.get("/")
    assert home.status_code == 200 and 'href="/register"' in home.text
    token = await csrf_from(http, "/register")
    r = await http.post("/register", data=registration(token))
    # Registering logs the new patient in and sends them on to find a doctor.
    assert r.status_code == 303 and r.headers["location"] == "/doctors"
    assert await count_users(sessions, "ada@example.org") == 1
    page = await http.get("/appointments")
    assert page.status_code == 200
    r = await http.post("/logout", data={"csrf_token": csrf_of(page.text)})

    r = await log_in(http, "ada@example.org")
    assert r.headers["location"] == "/appointments"
    page = await http.get("/appointments")
    assert page.status_code == 200
    assert "My appointments" in page.text
    assert 'action="/logout"' in page.text

    r = await http.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    assert (await http.get("/appointments")).status_code == 303


async def test_form_post_without_or_with_wrong_csrf_is_refused(http, sessions) -> None:
    token = await csrf_from(http, "/register")
    form = registration(token)
    del form["csrf_token"]
    assert (await http.post("/register", data=form)).status_code == 403
    r = await http.post("/register", data=registration("not-the-token"))
    assert r.status_code == 403
    assert "form expired" in r.text
    assert await count_users(sessions, "ada@example.org") == 0
    # The login form is protected too (no login CSRF).
    r = await http.post("/login", data={"email": "x@example.org", "password": PASSWORD})
    assert r.status_code == 403


async def test_taken_email_is_shown_next_to_the_email_field(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    token = await csrf_from(http, "/register")
    r = await http.post("/register", data=registration(token, email=patient.email.upper()))
    assert r.status_code == 409
    box = field_container(r.text, "email")
    assert 'class="error"' in box
    assert "An account with this email already exists." in box
    assert "already exists" not in field_container(r.text, "name")
    # What was typed is kept, the password is not echoed back.
    assert 'value="Ada Patient"' in r.text and PASSWORD not in r.text


async def test_short_password_is_shown_next_to_the_password_field(http) -> None:
    token = await csrf_from(http, "/register")
    r = await http.post("/register", data=registration(token, password="short"))
    assert r.status_code == 422
    box = field_container(r.text, "password")
    assert 'class="error"' in box and "Use at least 10 characters." in box


async def test_invalid_birth_date_and_zone_are_shown_next_to_their_fields(http) -> None:
    token = await csrf_from(http, "/register")
    r = await http.post(
        "/register",
        data=registration(token, date_of_birth="2999-01-01", time_zone_other="Mars/Olympus"),
    )
    assert r.status_code == 422
    assert "in the future" in field_container(r.text, "date_of_birth")
    assert "Mars/Olympus" in r.text.split('id="time_zone-error"')[1].split("</p>")[0]


async def test_wrong_password_and_open_redirect(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    token = await csrf_from(http, "/login?next=//evil.example/x")
    page = (await http.get("/login?next=//evil.example/x")).text
    assert 'name="next" value=""' in page
    r = await http.post(
        "/login", data={"csrf_token": token, "email": patient.email, "password": "wrong pass"}
    )
    assert r.status_code == 401 and "Email or password is wrong." in r.text
    r = await http.post(
        "/login",
        data={
            "csrf_token": token,
            "email": patient.email,
            "password": PASSWORD,
            "next": "https://evil.example/",
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/appointments"


def slot_link(doctor: Actor, starts_at: datetime) -> str:
    query = urlencode({"doctor_id": str(doctor.user_id), "starts_at": starts_at.isoformat()})
    return f"/book?{query}"


def monday_of(instant: datetime, zone: str) -> str:
    day = instant.astimezone(ZoneInfo(zone)).date()
    return (day - timedelta(days=day.weekday())).isoformat()


async def test_book_through_the_calendar_and_the_form(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings, name="Dr. Grace Hopper")
    patient = await make_patient(sessions, settings)
    starts_at = next_weekday_at(10)

    search = await http.get("/doctors", params={"specialty": "Cardiology"})
    assert search.status_code == 200 and "Dr. Grace Hopper" in search.text

    await log_in(http, patient.email)
    week = await http.get(
        f"/doctors/{doctor.user_id}", params={"week": monday_of(starts_at, "Europe/Berlin")}
    )
    assert week.status_code == 200
    link = slot_link(doctor, starts_at)
    assert html.escape(link) in week.text
    assert "Next week" in week.text and "Previous week" in week.text

    form = await http.get(link)
    assert form.status_code == 200
    assert starts_at.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") in form.text
    r = await http.post(
        "/book",
        data={
            "csrf_token": csrf_of(form.text),
            "doctor_id": hidden(form.text, "doctor_id"),
            "starts_at": hidden(form.text, "starts_at"),
            "idempotency_key": hidden(form.text, "idempotency_key"),
            "reason": "Chest pain after running",
        },
    )
    assert r.status_code == 303, r.text
    detail = await http.get(r.headers["location"])
    assert "Your appointment is booked." in detail.text
    assert "Chest pain after running" in detail.text

    listing = await http.get("/appointments")
    assert "Dr. Grace Hopper" in listing.text and "booked" in listing.text
    # The slot is no longer offered, and booking it again says so next to the slot.
    week = await http.get(
        f"/doctors/{doctor.user_id}", params={"week": monday_of(starts_at, "Europe/Berlin")}
    )
    assert html.escape(link) not in week.text
    taken = await http.get(link)
    assert "already booked" in taken.text and f"/doctors/{doctor.user_id}?week=" in taken.text


async def test_anonymous_slot_click_goes_to_login_first(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    link = slot_link(doctor, next_weekday_at(10))
    r = await http.get(link)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?" + urlencode({"next": link})


async def test_double_submit_books_once(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    await log_in(http, patient.email)
    form = await http.get(slot_link(doctor, next_weekday_at(11)))
    data = {
        "csrf_token": csrf_of(form.text),
        "doctor_id": hidden(form.text, "doctor_id"),
        "starts_at": hidden(form.text, "starts_at"),
        "idempotency_key": hidden(form.text, "idempotency_key"),
        "reason": "Follow-up",
    }
    first = await http.post("/book", data=data)
    second = await http.post("/book", data=data)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert await count_appointments(sessions) == 1


async def test_missing_reason_is_shown_next_to_the_reason(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    await log_in(http, patient.email)
    form = await http.get(slot_link(doctor, next_weekday_at(11)))
    r = await http.post(
        "/book",
        data={
            "csrf_token": csrf_of(form.text),
            "doctor_id": hidden(form.text, "doctor_id"),
            "starts_at": hidden(form.text, "starts_at"),
            "idempotency_key": hidden(form.text, "idempotency_key"),
            "reason": "",
        },
    )
    assert r.status_code == 422
    assert 'id="reason-error"' in r.text
    assert await count_appointments(sessions) == 0


async def test_saving_hours_that_exclude_a_booking_lists_it_and_keeps_it(
    http, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings, name="Paula Outside")
    appointment_id = await book_directly(
        sessions, patient, doctor, next_weekday_at(10), "Morning check"
    )
    r = await log_in(http, doctor.email)
    assert r.headers["location"] == "/agenda"
    editor = await http.get("/schedule")
    assert editor.status_code == 200
    assert editor.text.count('name="weekday_') >= 14
    form = {"csrf_token": csrf_of(editor.text), "rows": "14"}
    form |= {"slot_minutes": "30", "buffer_minutes": "0", "min_notice_minutes": "0"}
    form |= {"horizon_days": "90"}
    for i in range(14):  # afternoons only, every day; the last 7 rows blank
        form |= {f"weekday_{i}": str(i % 7), f"start_{i}": "", f"end_{i}": ""}
        if i < 7:
            form |= {f"start_{i}": "13:00", f"end_{i}": "17:00"}
    r = await http.post("/schedule", data=form)
    assert r.status_code == 303, r.text
    page = await http.get("/schedule")
    assert "outside your hours" in page.text
    section = page.text.split('id="outside-title"')[1].split("</section>")[0]
    assert f"/appointments/{appointment_id}" in section and "Paula Outside" in section
    assert page.text.count('value="13:00"') == 7
    async with sessions() as s:
        status = await s.scalar(select(Appointment.status).where(Appointment.id == appointment_id))
    assert status == "booked"

    agenda = await http.get(
        "/agenda", params={"view": "week", "date": next_weekday_at(10).date().isoformat()}
    )
    assert agenda.status_code == 200 and "Paula Outside" in agenda.text
    assert "Morning check" in agenda.text


async def test_schedule_errors_point_at_the_row(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    await log_in(http, doctor.email)
    editor = await http.get("/schedule")
    form = {"csrf_token": csrf_of(editor.text), "rows": "3", "slot_minutes": "30"}
    form |= {"buffer_minutes": "0", "min_notice_minutes": "0", "horizon_days": "90"}
    form |= {"weekday_0": "0", "start_0": "09:00", "end_0": "12:00"}
    form |= {"weekday_1": "", "start_1": "", "end_1": ""}
    form |= {"weekday_2": "1", "start_2": "15:00", "end_2": "14:00"}
    r = await http.post("/schedule", data=form)
    assert r.status_code == 422
    assert 'id="row_2-error"' in r.text and "end after it starts" in r.text
    form |= {"weekday_2": "", "start_2": "14:00", "end_2": "15:00"}
    r = await http.post("/schedule", data=form)
    assert r.status_code == 422
    assert "Choose a day for this row." in r.text.split('id="weekday_2-error"')[1]


async def test_date_override_add_and_delete(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    await log_in(http, doctor.email)
    token = csrf_of((await http.get("/schedule")).text)
    day = (datetime.now(UTC) + timedelta(days=5)).date().isoformat()
    r = await http.post(
        "/schedule/overrides",
        data={"csrf_token": token, "day": day, "kind": "extra", "start": "", "end": ""},
    )
    assert r.status_code == 422 and "extra hours need a start" in r.text.lower()
    r = await http.post(
        "/schedule/overrides",
        data={"csrf_token": token, "day": day, "kind": "off", "start": "", "end": ""},
    )
    assert r.status_code == 303
    page = (await http.get("/schedule")).text
    found = re.search(r'action="(/schedule/overrides/\d+/delete)"', page)
    assert found and "whole day" in page
    assert (await http.post(found.group(1), data={"csrf_token": token})).status_code == 303
    assert "No overrides." in (await http.get("/schedule")).text


async def test_admin_approves_a_pending_doctor(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings, name="Dr. Pending Person", approved=False)
    admin = await make_admin(sessions, settings)
    r = await log_in(http, admin.email)
    assert r.headers["location"] == "/admin/doctors"
    page = await http.get("/admin/doctors")
    assert "Dr. Pending Person" in page.text
    r = await http.post(
        f"/admin/doctors/{doctor.user_id}/approve", data={"csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 303
    page = await http.get("/admin/doctors")
    assert "Dr. Pending Person" not in page.text and "approved" in page.text
    async with sessions() as s:
        doc = await s.get(Doctor, doctor.user_id)
    assert doc is not None and doc.approved_at is not None


async def test_patient_cannot_open_admin_page(http, sessions, settings) -> None:
    patient = await make_patient(sessions, settings)
    await log_in(http, patient.email)
    r = await http.get("/admin/doctors")
    assert r.status_code == 403 and "admin" in r.text.split("<main")[1]


async def test_another_patients_appointment_is_not_found(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    owner = await make_patient(sessions, settings)
    other = await make_patient(sessions, settings)
    secret = "Very private symptom description"
    appointment_id = await book_directly(sessions, owner, doctor, next_weekday_at(14), secret)
    await log_in(http, other.email)
    r = await http.get(f"/appointments/{appointment_id}")
    assert r.status_code == 404
    assert secret not in r.text
    token = csrf_of(r.text)
    r = await http.post(f"/appointments/{appointment_id}/cancel", data={"csrf_token": token})
    assert r.status_code == 404 and secret not in r.text


async def test_cancel_and_reschedule_from_the_detail_page(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appointment_id = await book_directly(sessions, patient, doctor, next_weekday_at(9), "Rash")
    await log_in(http, patient.email)
    page = await http.get(f"/appointments/{appointment_id}")
    new_start = datetime.combine(
        next_weekday_at(9).astimezone(ZoneInfo("Europe/Berlin")).date(),
        time(15),
        tzinfo=ZoneInfo("Europe/Berlin"),
    ).astimezone(UTC)
    assert f'value="{new_start.isoformat()}"' in page.text
    r = await http.post(
        f"/appointments/{appointment_id}/reschedule",
        data={"csrf_token": csrf_of(page.text), "starts_at": new_start.isoformat()},
    )
    assert r.status_code == 303
    page = await http.get(f"/appointments/{appointment_id}")
    assert "The appointment is moved." in page.text and "rescheduled" in page.text
    r = await http.post(
        f"/appointments/{appointment_id}/cancel",
        data={"csrf_token": csrf_of(page.text), "reason": "Feeling better", "confirm": "yes"},
    )
    assert r.status_code == 303
    page = await http.get(f"/appointments/{appointment_id}")
    assert "cancelled" in page.text and "Cancel the appointment" not in page.text


async def test_patient_cancel_cut_off_is_shown_on_the_page(http, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    soon = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    async with sessions() as s, s.begin():
        appointment = Appointment(
            doctor_id=doctor.user_id,
            patient_id=patient.user_id,
            starts_at=soon,
            ends_at=soon + timedelta(minutes=30),
            buffer_ends_at=soon + timedelta(minutes=30),
            status="booked",
            reason="Soon",
        )
        s.add(appointment)
    await log_in(http, patient.email)
    page = await http.get(f"/appointments/{appointment.id}")
    r = await http.post(
        f"/appointments/{appointment.id}/cancel",
        data={"csrf_token": csrf_of(page.text), "confirm": "yes"},
    )
    assert r.status_code == 422
    assert 'id="cancel-error"' in r.text and "hours before they start" in r.text


async def test_anonymous_pages_redirect_to_login(http) -> None:
    for path in ("/appointments", "/agenda", "/schedule", "/admin/doctors", "/appointments/1"):
        r = await http.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login?" + urlencode({"next": path})
    login = await http.get("/login?next=/appointments")
    assert 'name="next" value="/appointments"' in login.text


async def test_anonymous_form_posts_log_in_and_come_back_to_their_page(http) -> None:
    """A form post by a visitor whose session has ended goes to log in, then back to the page
    the form is on (the post's own URL answers only POST)."""
    token = await csrf_from(http, "/login")
    booking = {"doctor_id": "7", "starts_at": "2030-01-07T09:00:00+00:00", "reason": "Cough"}
    expected = {
        "/appointments/41/cancel": "/appointments/41",
        "/appointments/41/reschedule": "/appointments/41",
        "/visits/41/note": "/appointments/41",
        "/schedule": "/schedule",
        "/schedule/overrides/3/delete": "/schedule",
        "/admin/doctors/5/approve": "/admin/doctors",
        "/book": "/book?" + urlencode(booking),
    }
    for path, back in expected.items():
        r = await http.post(path, data={"csrf_token": token, **booking})
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login?" + urlencode({"next": back}), path
