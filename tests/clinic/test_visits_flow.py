"""The visit as the participants live it: the join ticket and window, the waiting room,
leaving and rejoining, the end (the appointment becomes completed), events, notes, presence
that expires, large messages, and messages from another release."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import websockets
from sqlalchemy import func, select, text

from clinic.appointments.models import Appointment, AppointmentEvent
from clinic.core.config import Settings
from clinic.visits import tokens
from clinic.visits.models import Visit, VisitMessage, VisitPresence
from factories import make_admin, make_doctor, make_patient, token_for
from visits_fixtures import bearer, client, instance, log_in, make_appointment, visit_settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(
        settings,
        stun_urls=["stun:stun.example.org:3478"],
        turn_urls=["turn:turn.example.org:3478?transport=udp"],
        turn_secret="coturn-static-auth-secret",
    )


async def _pair(sessions, settings, **kwargs):
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient, **kwargs)
    return doctor, patient, appt


async def test_join_ticket_inside_the_window_only(app, http, sessions, settings) -> None:
    doctor, patient, appt = await _pair(sessions, settings)
    auth = await token_for(http, patient)
    r = await http.get(f"/api/v1/visits/{appt}/join", headers=auth)
    assert r.status_code == 200, r.text
    ticket = r.json()
    assert ticket["role"] == "patient" and ticket["websocket_path"] == f"/visits/{appt}/ws"
    stun, turn = ticket["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    expiry, user = turn["username"].split(":")
    assert int(user) == patient.user_id and int(expiry) > datetime.now(UTC).timestamp()
    assert (
        turn["credential"]
        == tokens.turn_credential(
            secret="coturn-static-auth-secret",
            user_id=patient.user_id,
            now=datetime.fromtimestamp(int(expiry), UTC) - settings.turn_credential_ttl,
            ttl=settings.turn_credential_ttl,
        ).credential
    )

    # Tomorrow's appointment: refused, with when it opens and closes in the viewer's zone.
    later = await make_appointment(
        sessions, doctor=doctor, patient=patient, starts_in=timedelta(days=1)
    )
    r = await http.get(f"/api/v1/visits/{later}/join", headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "outside_join_window"
    message = r.json()["error"]["message"]
    assert "opens on" in message and "(Europe/Berlin)" in message
    async with sessions() as session:
        later_starts = (await session.get(Appointment, later)).starts_at
    opens = later_starts - settings.visit_join_before
    assert opens.astimezone(ZoneInfo("Europe/Berlin")).strftime("%a %d %b %Y, %H:%M") in message
    assert opens.astimezone(ZoneInfo("Europe/Berlin")).strftime("%a %d %b %Y, %H:%M") in message

    # Long over.
    past = await make_appointment(
        sessions, doctor=doctor, patient=patient, starts_in=timedelta(hours=-3)
    )
    r = await http.get(f"/api/v1/visits/{past}/join", headers=auth)
    assert r.status_code == 409 and "closed now" in r.json()["error"]["message"]

    # The visit page says the same, and the appointment page has no join link then.
    async with app.client() as browser:
        await log_in(browser, patient.email)
        page = await browser.get(f"/visits/{later}")
        assert page.status_code == 200 and 'id="visit-closed"' in page.text
        assert "visit.js" not in page.text
        detail = await browser.get(f"/appointments/{later}")
        assert (
            "Join video visit" not in detail.text and "You can join the video visit" in detail.text
        )
        detail = await browser.get(f"/appointments/{appt}")
        assert f'href="/visits/{appt}"' in detail.text and "Join video visit" in detail.text
        page = await browser.get(f"/visits/{appt}")
        assert 'id="visit"' in page.text and "/static/visit.js" in page.text
        assert (await browser.get("/static/visit.js")).status_code == 200


async def test_waiting_room_admit_leave_rejoin_end(app, http, sessions, settings) -> None:
    doctor, patient, appt = await _pair(sessions, settings)
    d_auth, p_auth = await token_for(http, doctor), await token_for(http, patient)
    url = [app.base_url]
    async with client(url, appt, p_auth) as p:
        assert p.welcomes[0]["role"] == "patient" and p.state == {
            "admitted": False,
            "ended": False,
            "present": {"patient": True, "doctor": False},
        }
        # The doctor sees who is waiting.
        waiting = (await http.get("/api/v1/visits/waiting", headers=d_auth)).json()
        assert [w["appointment_id"] for w in waiting] == [appt]
        async with client(url, appt, d_auth) as d:
            assert d.state["present"] == {"patient": True, "doctor": True}
            await p.wait_state(lambda s: s["present"]["doctor"])
            # A waiting patient cannot signal the doctor; nor the doctor them.
            await p.signal({"description": {"type": "offer", "sdp": "x"}})
            await p.wait_message(lambda m: m.get("code") == "not_admitted")
            await d.signal({"hello": "too early"})
            await d.wait_message(lambda m: m.get("code") == "not_admitted")
            # Only the doctor admits.
            await p.admit()
            await p.wait_message(lambda m: m.get("code") == "forbidden")
            await d.admit()
            await p.wait_state(lambda s: s["admitted"])
            assert (await http.get("/api/v1/visits/waiting", headers=d_auth)).json() == []
            await p.signal({"candidate": {"candidate": "c"}})
            assert (await d.next_signal())["data"] == {"candidate": {"candidate": "c"}}
            await d.signal({"answer": 1})
            assert (await p.next_signal()) == {
                "type": "signal",
                "from": "doctor",
                "data": {"answer": 1},
            }
            assert d.pending_signals() == 0 and p.pending_signals() == 0  # none of the earlier

            await p.leave()
            assert p.final is not None and p.final.code == 1000
            await d.wait_state(lambda s: not s["present"]["patient"])
            async with client(url, appt, p_auth) as p2:  # rejoin: still admitted
                assert p2.state["admitted"] is True
                await d.wait_state(lambda s: s["present"]["patient"])
                await p2.end()  # not the patient's to do
                await p2.wait_message(lambda m: m.get("code") == "forbidden")
                await d.end()
                await p2.wait_message(lambda m: m["type"] == "ended")
                await d.wait_message(lambda m: m["type"] == "ended")
                await asyncio.sleep(0.2)
                assert p2.final is not None and p2.final.code == 1000
                assert d.final is not None and d.final.code == 1000

    async with sessions() as session:
        a = await session.get(Appointment, appt)
        assert a is not None and a.status == "completed"
        kinds = list(
            await session.scalars(
                select(AppointmentEvent.kind).where(AppointmentEvent.appointment_id == appt)
            )
        )
        assert kinds == ["booked", "completed"]
        assert await session.scalar(select(func.count()).select_from(VisitPresence)) == 0
    events = (await http.get(f"/api/v1/visits/{appt}/events", headers=d_auth)).json()
    seen = [(e["kind"], e["user_id"]) for e in events]
    assert seen[:3] == [
        ("joined", patient.user_id),
        ("joined", doctor.user_id),
        ("admitted", doctor.user_id),
    ]
    assert ("left", patient.user_id) in seen and seen[-1] == ("ended", doctor.user_id)
    assert all(e["at"] for e in events)
    ats = [datetime.fromisoformat(e["at"]) for e in events]
    assert ats == sorted(ats)

    # Over: no new ticket, no new socket.
    r = await http.get(f"/api/v1/visits/{appt}/join", headers=p_auth)
    assert r.status_code == 410
    token = tokens.issue_join_token(
        secret=settings.secret_key, user_id=patient.user_id, appointment_id=appt
    )
    code = await _raw_close_code(app.base_url, appt, token, p_auth)
    assert code == 4410


async def _raw_close_code(base: str, appt: int, token: str, headers: dict[str, str]) -> int | None:
    uri = "ws" + base.removeprefix("http") + f"/visits/{appt}/ws?token={token}"
    async with websockets.connect(uri, additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        return ws.close_code


async def test_notes_after_the_visit_for_patient_and_doctor_only(
    app, http, sessions, settings
) -> None:
    doctor, patient, appt = await _pair(sessions, settings)
    d_auth, p_auth = await token_for(http, doctor), await token_for(http, patient)
    note_url = f"/api/v1/visits/{appt}/notes"
    r = await http.post(note_url, json={"body": "too early"}, headers=d_auth)
    assert r.status_code == 409  # the visit has not ended
    async with client([app.base_url], appt, p_auth), client([app.base_url], appt, d_auth) as d:
        await d.admit()
        await d.end()
        await d.wait_message(lambda m: m["type"] == "ended")
    r = await http.post(
        note_url, json={"body": "Rest, fluids, Secret-Diagnosis-42."}, headers=d_auth
    )
    assert r.status_code == 201, r.text
    assert r.json()["author_name"] == doctor.name
    r = await http.post(note_url, json={"body": "patients do not write notes"}, headers=p_auth)
    assert r.status_code == 403
    notes = (await http.get(note_url, headers=p_auth)).json()
    assert [n["body"] for n in notes] == ["Rest, fluids, Secret-Diagnosis-42."]
    assert notes[0]["written_at"]
    # Writing and reading the note are patient-data accesses: both are in the audit trail.
    async with sessions() as session:
        trail = (
            await session.execute(
                text(
                    "SELECT actor_id, action, subject FROM audit_records"
                    " WHERE patient_id = :p AND subject LIKE 'visit_note%' ORDER BY id"
                ),
                {"p": patient.user_id},
            )
        ).all()
    assert [(a, act) for a, act, _ in trail] == [
        (doctor.user_id, "create"),
        (patient.user_id, "read"),
    ]

    # Nobody else: another patient, another doctor, an admin.
    for other in (
        await make_patient(sessions, settings),
        await make_doctor(sessions, settings),
        await make_admin(sessions, settings),
    ):
        auth = await token_for(http, other)
        for r in (
            await http.get(note_url, headers=auth),
            await http.post(note_url, json={"body": "x"}, headers=auth),
            await http.get(f"/api/v1/visits/{appt}/events", headers=auth),
        ):
            assert r.status_code == 404, r.text
            assert "Secret-Diagnosis-42" not in r.text
        async with app.client() as browser:
            await log_in(browser, other.email)
            page = await browser.get(f"/appointments/{appt}")
            assert "Secret-Diagnosis-42" not in page.text

    # The patient reads it on their appointment page; the doctor can add to it there.
    async with app.client() as browser:
        await log_in(browser, patient.email)
        page = await browser.get(f"/appointments/{appt}")
        assert "Secret-Diagnosis-42" in page.text and 'action="/visits/' not in page.text
    async with app.client() as browser:
        await log_in(browser, doctor.email)
        page = await browser.get(f"/appointments/{appt}")
        assert "Secret-Diagnosis-42" in page.text and f'action="/visits/{appt}/note"' in page.text
        import re

        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        r = await browser.post(
            f"/visits/{appt}/note",
            data={"csrf_token": csrf.group(1), "note": "Follow-up in 2 weeks."},
        )
        assert r.status_code == 303
        page = await browser.get(f"/appointments/{appt}")
        assert "Follow-up in 2 weeks." in page.text and "The visit note is saved." in page.text


async def test_browser_session_cookie_authenticates_the_socket(app, sessions, settings) -> None:
    _, patient, appt = await _pair(sessions, settings)
    async with app.client() as browser:
        await log_in(browser, patient.email)
        ticket = (await browser.get(f"/api/v1/visits/{appt}/join")).json()
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    uri = (
        "ws"
        + app.base_url.removeprefix("http")
        + f"{ticket['websocket_path']}?token={ticket['token']}"
    )
    async with websockets.connect(uri, additional_headers={"Cookie": cookie}) as ws:
        import json

        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome" and welcome["role"] == "patient"
    # The same token without the cookie is refused.
    async with websockets.connect(uri) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401


async def test_presence_of_a_crashed_instance_expires(http, sessions, settings) -> None:
    doctor, patient, appt = await _pair(sessions, settings)
    p_auth = await token_for(http, patient)
    async with instance(settings) as inst, client([inst.url], appt, p_auth) as p:
        # A doctor connected through an instance that then died: its row is never refreshed.
        async with sessions() as session, session.begin():
            visit_id = await session.scalar(select(Visit.id).where(Visit.appointment_id == appt))
            session.add(
                VisitPresence(
                    visit_id=visit_id,
                    role="doctor",
                    user_id=doctor.user_id,
                    connection_id="gone",
                    instance_id="crashed-instance",
                    expires_at=datetime.now(UTC) + timedelta(seconds=1),
                )
            )
        hub = inst.hub
        await hub.changed(visit_id)
        await p.wait_state(lambda s: s["present"]["doctor"])
        await asyncio.sleep(1.2)
        await hub.beat_once()  # any live instance's heartbeat removes expired rows
        await p.wait_state(lambda s: not s["present"]["doctor"])
        async with sessions() as session:
            rows = list(await session.scalars(select(VisitPresence.instance_id)))
        assert rows == [hub.instance_id]  # the patient's own row was refreshed, not expired


async def test_large_messages_travel_through_the_table(app, http, sessions, settings) -> None:
    doctor, patient, appt = await _pair(sessions, settings)
    d_auth, p_auth = await token_for(http, doctor), await token_for(http, patient)
    async with client([app.base_url], appt, p_auth) as p, client([app.base_url], appt, d_auth) as d:
        await d.admit()
        await p.wait_state(lambda s: s["admitted"])
        sdp = "v=0\r\n" + "a=candidate:1 1 udp 2130706431 10.0.0.1 9 typ host\r\n" * 400
        assert len(sdp) > 8000
        await d.signal({"description": {"type": "offer", "sdp": sdp}})
        await d.signal({"candidate": {"candidate": "after"}})
        first, second = await p.next_signal(), await p.next_signal()
        assert first["data"]["description"]["sdp"] == sdp  # intact, and in order
        assert second["data"] == {"candidate": {"candidate": "after"}}
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(VisitMessage)) == 1


async def test_messages_of_another_release_are_ignored_with_a_log_line(
    sessions, settings, caplog
) -> None:
    doctor, patient, appt = await _pair(sessions, settings)
    async with instance(settings) as inst:
        d_auth, p_auth = await bearer(inst.url, doctor), await bearer(inst.url, patient)
    async with (
        instance(settings) as inst,
        client([inst.url], appt, p_auth) as p,
        client([inst.url], appt, d_auth) as d,
    ):
        await d.admit()
        await p.wait_state(lambda s: s["admitted"])
        visit_id = p.welcomes[0]["visit"]
        hub = inst.hub
        caplog.set_level(logging.WARNING, logger="clinic.visits.hub")
        for payload in (
            f'{{"v":2,"visit":{visit_id},"kind":"signal","from":"x","to":"patient","id":"1","body":{{}}}}',
            f'{{"v":1,"visit":{visit_id},"kind":"teleport","from":"x","to":"patient","id":"2"}}',
            "not json",
        ):
            await hub.raw_notify(payload)
        await d.signal({"still": "works"})
        assert (await p.next_signal())["data"] == {"still": "works"}
        assert p.pending_signals() == 0
        assert hub.ignored == 3
        assert sum("ignoring a signalling message" in r.message for r in caplog.records) == 3


async def test_a_second_tab_replaces_the_first(app, http, sessions, settings) -> None:
    _, patient, appt = await _pair(sessions, settings)
    p_auth = await token_for(http, patient)
    async with (
        client([app.base_url], appt, p_auth) as first,
        client([app.base_url], appt, p_auth) as second,
    ):
        assert (await first.wait_final()).code == 4409
        assert second.connected and second.state["present"]["patient"]


async def test_demo_visit_can_be_joined_now(http, sessions, settings) -> None:
    from clinic.seed import seed_demo
    from clinic.visits.demo import DEMO_PATIENT, seed_demo_visit

    await seed_demo(sessions, settings, "demo-password-12345")
    first = await seed_demo_visit(sessions, settings)
    assert first is not None and await seed_demo_visit(sessions, settings) == first
    r = await http.post(
        "/api/v1/auth/token", json={"email": DEMO_PATIENT, "password": "demo-password-12345"}
    )
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await http.get(f"/api/v1/visits/{first}/join", headers=auth)).status_code == 200
