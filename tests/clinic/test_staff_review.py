"""Doctor sign-ups: an admin approves, rejects with a reason or asks for information; each
decision is kept and reaches the doctor as an email (the outbox, in the demo)."""

from __future__ import annotations

import re

from sqlalchemy import select

from clinic.accounts.models import Doctor
from clinic.accounts.review import DoctorReview
from clinic.notify.models import OutboxMessage
from factories import make_admin, make_doctor, make_patient, token_for
from notify_fixtures import eventually
from visits_fixtures import log_in


async def _mail_to(sessions, address: str) -> list[OutboxMessage]:
    async with sessions() as s:
        return list(
            await s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.recipient == address)
                .order_by(OutboxMessage.id)
            )
        )


async def _has_mail(sessions, address: str, n: int) -> bool:
    return len(await _mail_to(sessions, address)) == n


async def test_three_decisions_over_the_api_each_with_an_email(http, sessions, settings) -> None:
    admin = await make_admin(sessions, settings)
    auth = await token_for(http, admin)
    asked = await make_doctor(sessions, settings, name="Dr. Ada Asked", approved=False)
    rejected = await make_doctor(sessions, settings, name="Dr. Rex O'Reject", approved=False)
    url = "/api/v1/doctor-sign-ups"

    listed = (await http.get(url, headers=auth)).json()
    assert {(s["name"], s["state"]) for s in listed} == {
        ("Dr. Ada Asked", "new"),
        ("Dr. Rex O'Reject", "new"),
    }
    # A rejection needs its reason, a request its question.
    for decision in ("rejected", "info_requested"):
        r = await http.post(
            f"{url}/{rejected.user_id}/decision",
            json={"decision": decision, "message": " "},
            headers=auth,
        )
        assert r.status_code == 422, r.text
    r = await http.post(
        f"{url}/{asked.user_id}/decision",
        json={"decision": "info_requested", "message": "A scan of your licence, please."},
        headers=auth,
    )
    assert r.status_code == 200 and r.json()["decision"] == "info_requested"
    r = await http.post(
        f"{url}/{rejected.user_id}/decision",
        json={"decision": "rejected", "message": "The licence number is not in the register."},
        headers=auth,
    )
    assert r.status_code == 200
    r = await http.post(
        f"{url}/{asked.user_id}/decision", json={"decision": "approved"}, headers=auth
    )
    assert r.status_code == 200
    r = await http.post(
        f"{url}/{asked.user_id}/decision",
        json={"decision": "rejected", "message": "changed my mind"},
        headers=auth,
    )
    assert r.status_code == 409  # an approved doctor is not reviewed again

    listed = (await http.get(url, headers=auth)).json()
    assert [(s["name"], s["state"], s["last_message"]) for s in listed] == [
        ("Dr. Rex O'Reject", "rejected", "The licence number is not in the register.")
    ]
    async with sessions() as s:
        doctor = await s.get(Doctor, asked.user_id)
        assert doctor is not None and doctor.approved_by == admin.user_id
        kept = list(await s.scalars(select(DoctorReview.decision).order_by(DoctorReview.id)))
        assert kept == ["info_requested", "rejected", "approved"]

    await eventually(lambda: _has_mail(sessions, asked.email, 2), timeout=20)
    await eventually(lambda: _has_mail(sessions, rejected.email, 1), timeout=20)
    ask_mail, approve_mail = await _mail_to(sessions, asked.email)
    assert "more information" in ask_mail.subject
    assert "A scan of your licence, please." in ask_mail.body
    assert "Hello Dr. Ada Asked" in ask_mail.body
    assert approve_mail.subject == "Your doctor account is approved"
    (reject_mail,) = await _mail_to(sessions, rejected.email)
    assert reject_mail.subject == "Your doctor account was not approved"
    assert "The licence number is not in the register." in reject_mail.body
    assert "Dr. Rex O'Reject" in reject_mail.body  # plain text: nothing HTML-escaped

    # Only admins decide.
    patient_auth = await token_for(http, await make_patient(sessions, settings))
    assert (await http.get(url, headers=patient_auth)).status_code == 403
    r = await http.post(
        f"{url}/{rejected.user_id}/decision", json={"decision": "approved"}, headers=patient_auth
    )
    assert r.status_code == 403
    assert (await http.get(url)).status_code == 401


async def test_page_shows_a_missing_reason_next_to_its_field(app, sessions, settings) -> None:
    admin = await make_admin(sessions, settings)
    doctor = await make_doctor(sessions, settings, name="Dr. Page Person", approved=False)
    async with app.client() as browser:
        await log_in(browser, admin.email)
        page = await browser.get("/admin/sign-ups")
        assert page.status_code == 200 and "Dr. Page Person" in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        r = await browser.post(
            f"/admin/sign-ups/{doctor.user_id}/reject",
            data={"csrf_token": token.group(1), "message": ""},
        )
        assert r.status_code == 422
        assert f'id="reject-{doctor.user_id}-error"' in r.text
        assert "Give the reason for the rejection." in r.text
        r = await browser.post(
            f"/admin/sign-ups/{doctor.user_id}/ask",
            data={"csrf_token": token.group(1), "message": "Your licence, please."},
        )
        assert r.status_code == 303
        page = await browser.get("/admin/sign-ups")
        assert "Dr. Page Person is asked for information" in page.text
        assert "Your licence, please." in page.text
        r = await browser.post(
            f"/admin/sign-ups/{doctor.user_id}/fire",
            data={"csrf_token": token.group(1), "message": "x"},
        )
        assert r.status_code == 404


async def test_the_older_approve_endpoints_record_and_email_like_the_review(
    http, sessions, settings
) -> None:
    # POST /api/v1/admin/doctors/{id}/approve and the /admin/doctors page's button approved
    # silently, without a record or an email: now they are the review's approval.
    admin = await make_admin(sessions, settings)
    auth = await token_for(http, admin)
    doctor = await make_doctor(sessions, settings, name="Dr. Old Path", approved=False)
    r = await http.post(f"/api/v1/admin/doctors/{doctor.user_id}/approve", headers=auth)
    assert r.status_code == 204
    again = await http.post(f"/api/v1/admin/doctors/{doctor.user_id}/approve", headers=auth)
    assert again.status_code == 409 and "already approved" in again.json()["error"]["message"]
    async with sessions() as s:
        kept = list(await s.scalars(select(DoctorReview.decision)))
        assert kept == ["approved"]
    await eventually(lambda: _has_mail(sessions, doctor.email, 1), timeout=20)
    (mail,) = await _mail_to(sessions, doctor.email)
    assert mail.subject == "Your doctor account is approved"
