"""The visit from the attacker's side: another patient, an unapproved doctor, an admin, an
expired, forged or borrowed token, a join outside the window. Each is refused when the socket
opens, and no signalling message reaches the visit: the participants receive nothing, no
NOTIFY is sent for it, nothing is recorded."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import asyncpg
import pytest
import websockets
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select

from clinic.core.config import Settings
from clinic.visits import tokens
from clinic.visits.hub import plain_dsn
from clinic.visits.models import VisitEvent, VisitPresence
from clinic.visits.protocol import CHANNEL
from factories import make_admin, make_doctor, make_patient, token_for
from visits_fixtures import client, make_appointment, visit_settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings)


class OldSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 3600


def expired_token(secret: str, user_id: int, appointment_id: int) -> str:
    serializer = URLSafeTimedSerializer(secret, salt="clinic.visits.join", signer=OldSigner)
    return serializer.dumps({"u": user_id, "a": appointment_id})


async def attempt(base: str, appt: int, token: str, headers: dict[str, str]) -> int | None:
    """Open the socket and at once try to signal the visit; returns the close code."""
    uri = "ws" + base.removeprefix("http") + f"/visits/{appt}/ws?token={token}"
    async with websockets.connect(uri, additional_headers=headers) as ws:
        try:
            await ws.send(json.dumps({"type": "signal", "data": {"evil": True}}))
            await ws.send(json.dumps({"type": "admit"}))
        except websockets.ConnectionClosed:
            pass
        received = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                received.append(await asyncio.wait_for(ws.recv(), 5))
        assert received == []  # not even a welcome
        return ws.close_code


async def test_every_attack_is_refused_and_nothing_reaches_the_visit(
    app, http, sessions, settings
) -> None:
    secret = settings.secret_key
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    d_auth, p_auth = await token_for(http, doctor), await token_for(http, patient)

    eve = await make_patient(sessions, settings)
    eve_auth = await token_for(http, eve)
    mallory = await make_doctor(sessions, settings, approved=False)
    mallory_auth = await token_for(http, mallory)
    mallory_appt = await make_appointment(sessions, doctor=mallory, patient=eve)
    admin = await make_admin(sessions, settings)
    admin_auth = await token_for(http, admin)
    tomorrow = await make_appointment(
        sessions, doctor=doctor, patient=patient, starts_in=timedelta(days=1)
    )
    other_appt = await make_appointment(
        sessions, doctor=doctor, patient=patient, starts_in=timedelta(hours=1)
    )

    def mint(user_id: int, appointment_id: int) -> str:
        return tokens.issue_join_token(
            secret=secret, user_id=user_id, appointment_id=appointment_id
        )

    async with client([app.base_url], appt, p_auth) as p, client([app.base_url], appt, d_auth) as d:
        await d.admit()
        await p.wait_state(lambda s: s["admitted"] and s["present"]["doctor"])
        await d.wait_state(lambda s: s["admitted"])
        await asyncio.sleep(0.3)  # let every earlier notification settle
        seen_by = {"patient": len(p.messages), "doctor": len(d.messages)}
        async with sessions() as session:
            events_before = await session.scalar(select(func.count()).select_from(VisitEvent))

        spy = await asyncpg.connect(plain_dsn(settings.database_url))
        heard: list[str] = []
        await spy.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
        try:
            # The join API refuses the outsiders (404: the visit does not exist for them).
            assert (
                await http.get(f"/api/v1/visits/{appt}/join", headers=eve_auth)
            ).status_code == 404
            assert (
                await http.get(f"/api/v1/visits/{appt}/join", headers=admin_auth)
            ).status_code == 404
            r = await http.get(f"/api/v1/visits/{mallory_appt}/join", headers=mallory_auth)
            assert r.status_code == 403

            cases = [
                # another patient with the victim's (stolen) join token
                ("stolen token", appt, mint(patient.user_id, appt), eve_auth, 4401),
                # another patient with a validly signed token of their own for this visit
                ("other patient", appt, mint(eve.user_id, appt), eve_auth, 4404),
                ("admin", appt, mint(admin.user_id, appt), admin_auth, 4404),
                ("other doctor", appt, mint(mallory.user_id, appt), mallory_auth, 4404),
                (
                    "unapproved doctor",
                    mallory_appt,
                    mint(mallory.user_id, mallory_appt),
                    mallory_auth,
                    4403,
                ),
                ("expired token", appt, expired_token(secret, patient.user_id, appt), p_auth, 4401),
                (
                    "forged token",
                    appt,
                    tokens.issue_join_token(
                        secret="not-the-secret-key-123",
                        user_id=patient.user_id,
                        appointment_id=appt,
                    ),
                    p_auth,
                    4401,
                ),
                ("guessed token", appt, "eyJ1IjoxLCJhIjoxfQ.guess.guess", p_auth, 4401),
                ("no token", appt, "", p_auth, 4401),
                ("token for another visit", appt, mint(patient.user_id, other_appt), p_auth, 4401),
                ("no session", appt, mint(patient.user_id, appt), {}, 4401),
                (
                    "revoked-looking bearer",
                    appt,
                    mint(patient.user_id, appt),
                    {"Authorization": "Bearer clk_nope"},
                    4401,
                ),
                ("outside the window", tomorrow, mint(patient.user_id, tomorrow), p_auth, 4408),
                (
                    "no such appointment",
                    999999,
                    mint(patient.user_id, 999999),
                    p_auth,
                    4404,
                ),
            ]
            for name, target, token, headers, expected in cases:
                code = await attempt(app.base_url, target, token, headers)
                assert code == expected, (name, code)
            await asyncio.sleep(0.5)
        finally:
            await spy.close()

        assert heard == []  # no NOTIFY at all while the attacks ran
        assert p.pending_signals() == 0 and d.pending_signals() == 0
        assert len(p.messages) == seen_by["patient"] and len(d.messages) == seen_by["doctor"]
        assert p.connected and d.connected
        async with sessions() as session:
            assert (
                await session.scalar(select(func.count()).select_from(VisitEvent)) == events_before
            )
            present = set(await session.scalars(select(VisitPresence.user_id)))
        assert present == {patient.user_id, doctor.user_id}
