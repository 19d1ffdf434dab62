"""Proof with aiortc as both peers: offer, answer and candidates go through the real signalling
websocket of running app instances, and media arrives on both sides."""

from __future__ import annotations

import pytest

from clinic.core.config import Settings
from factories import make_doctor, make_patient
from visits_fixtures import bearer, client, instance, make_appointment, visit_settings
from visits_peer import Peer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings)


async def _call(doctor_urls, patient_urls, sessions, settings) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    d_auth = await bearer(doctor_urls[0], doctor)
    p_auth = await bearer(patient_urls[0], patient)
    async with (
        client(patient_urls, appt, p_auth) as p_client,
        client(doctor_urls, appt, d_auth) as d_client,
    ):
        await d_client.wait_state(lambda s: s["present"]["patient"])
        await d_client.admit()
        await p_client.wait_state(lambda s: s["admitted"] and s["present"]["doctor"])
        d_peer, p_peer = Peer(d_client, role="doctor"), Peer(p_client, role="patient")
        await d_peer.start()
        await p_peer.start()
        try:
            await d_peer.call()
            assert await d_peer.wait_media() > 0
            assert await p_peer.wait_media() > 0
            assert d_peer.frames > 0 and p_peer.frames > 0
            # Candidates travelled as their own signalling messages, both ways.
            assert d_peer.sent_candidates > 0 and p_peer.received_candidates > 0
            assert p_peer.sent_candidates > 0 and d_peer.received_candidates > 0
            assert d_peer.errors == [] and p_peer.errors == []
        finally:
            await d_peer.close()
            await p_peer.close()
    return d_client, p_client


async def test_two_aiortc_peers_on_one_instance(app, sessions, settings) -> None:
    d_client, p_client = await _call([app.base_url], [app.base_url], sessions, settings)
    assert d_client.instance == p_client.instance


async def test_two_aiortc_peers_on_two_instances(app, sessions, settings) -> None:
    async with instance(settings) as other:
        d_client, p_client = await _call([app.base_url], [other.url], sessions, settings)
    assert d_client.instance != p_client.instance
