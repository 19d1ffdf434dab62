"""The building blocks of a call that survives a deploy, with two plain instances: the
instance both participants signal through is shut down the way a drained colour is (uvicorn
stops, closing its websockets); media keeps flowing peer to peer; both clients reconnect their
signalling to the other instance with backoff and resume (the patient stays admitted: that is
database state); and an ICE restart negotiated through the new instance succeeds."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from clinic.core.config import Settings
from clinic.visits.models import VisitEvent
from factories import make_doctor, make_patient
from visits_fixtures import (
    bearer,
    client,
    instance,
    make_appointment,
    start_instance,
    visit_settings,
)
from visits_peer import Peer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return visit_settings(settings)


async def test_call_survives_its_signalling_instance_stopping(app, sessions, settings) -> None:
    green = None
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    old = await start_instance(settings)  # "blue": both participants start here
    try:
        urls = [old.url, app.base_url]  # the second one plays "green"
        d_auth, p_auth = await bearer(app.base_url, doctor), await bearer(app.base_url, patient)
        async with client(urls, appt, p_auth) as p_client, client(urls, appt, d_auth) as d_client:
            blue = old.hub.instance_id
            assert p_client.instance == d_client.instance == blue
            await d_client.wait_state(lambda s: s["present"]["patient"])
            await d_client.admit()
            await p_client.wait_state(lambda s: s["admitted"])
            d_peer, p_peer = Peer(d_client, role="doctor"), Peer(p_client, role="patient")
            await d_peer.start()
            await p_peer.start()
            try:
                await d_peer.call()
                await d_peer.wait_media()
                await p_peer.wait_media()

                # Drain and stop "blue" while the call is up.
                await old.stop()
                assert 1012 in d_client.closes and 1012 in p_client.closes  # service restart
                # Media does not go through the clinic: it keeps arriving meanwhile.
                await d_peer.wait_media()
                await p_peer.wait_media()

                # Both reconnect (with backoff) to "green" and resume their place.
                green = (await p_client.wait_welcomes(2))["instance"]
                assert (await d_client.wait_welcomes(2))["instance"] == green != blue
                assert p_client.reconnect_delays and d_client.reconnect_delays
                resumed = await p_client.wait_state(lambda s: s["present"]["doctor"])
                assert resumed["admitted"] is True  # no second admission needed
                assert p_client.welcomes[1]["admitted"] is True

                # An ICE restart negotiated through "green" moves media to a new pair.
                before = d_peer.ice_connection
                await d_peer.restart_ice()
                await p_peer.wait_restarted()
                assert d_peer.restarts == p_peer.restarts == 1
                assert d_peer.ice_connection is not before
                assert d_peer.old_connection is before and not before._protocols  # old closed
                await d_peer.wait_media()
                await p_peer.wait_media()
                assert d_peer.errors == [] and p_peer.errors == []
            finally:
                await d_peer.close()
                await p_peer.close()
    finally:
        if not old.task.done():
            await old.stop()

    async with sessions() as session:
        events = list(await session.scalars(select(VisitEvent).order_by(VisitEvent.id)))
    kinds = [e.kind for e in events]
    # Each participant: joined on blue, disconnected (1012) when blue stopped, joined on green
    # (resumed, on green's instance), and left at the end. One admission, before the switch.
    assert kinds.count("joined") == 4 and kinds.count("admitted") == 1
    dropped = [e for e in events if e.kind == "disconnected"]
    assert len(dropped) == 2 and {e.details["code"] for e in dropped} == {1012}
    rejoined = [e for e in events if e.kind == "joined"][2:]
    assert {e.details["instance"] for e in rejoined} == {green}
    assert kinds.index("admitted") < kinds.index("disconnected")


async def test_reconnects_after_a_dropped_socket_and_stays_admitted(
    app, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    async with instance(settings) as other:
        d_auth, p_auth = await bearer(app.base_url, doctor), await bearer(app.base_url, patient)
        async with (
            client([app.base_url], appt, p_auth) as p_client,
            client([other.url], appt, d_auth) as d_client,
        ):
            await d_client.wait_state(lambda s: s["present"]["patient"])
            await d_client.admit()
            await p_client.wait_state(lambda s: s["admitted"])
            await p_client.drop()  # the network, not the server
            await p_client.wait_welcomes(2)
            assert p_client.welcomes[1]["admitted"] is True
            await d_client.wait_state(lambda s: s["present"]["patient"])
            await d_client.signal({"hello": 1})
            assert (await p_client.next_signal())["data"] == {"hello": 1}
