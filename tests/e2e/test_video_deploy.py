"""A call that survives a deploy, through the real bluegreen daemon and Envoy: two aiortc peers
establish a call whose signalling goes through Envoy to blue; a second release is deployed to
green and switched live (the open websockets stay on blue); at the drain deadline blue's
instances are told to go away (SIGTERM: the app closes its websockets with a going-away code,
then starts again, still warm) and later blue is stopped. Media, which never touches the
clinic, keeps arriving; both clients' signalling reconnects through Envoy to green; an ICE
restart negotiated through green succeeds; and the doctor ends the visit through green (the
appointment is completed).

``pytest -s`` prints a timeline of the run."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from bluegreen_harness import (
    IGNORE,
    REPO,
    clinic,
    env,
    make_config,
    pid_alive,
    state_root,
    wait_idle_live,
)

from clinic.core.config import Settings
from clinic.core.db import make_engine, make_sessionmaker
from clinic.visits.client import SignallingClient
from factories import make_doctor, make_patient
from visits_fixtures import bearer, client, make_appointment
from visits_peer import Peer

pytestmark = pytest.mark.slow
__all__ = ["state_root"]  # the fixture, imported so pytest finds it here

DRAIN = 3  # seconds the drain waits for blue's websockets before blue is told to go away
# Going-away close codes: 1001, or 1012 ("service restart"), which uvicorn sends its
# websockets when it shuts down; clients reconnect after either.
GOING_AWAY = {1001, 1012}
SCALE_DOWN = 5  # seconds blue stays warm after the deploy before it is stopped
EXTRA_ENV = {"CLINIC_STUN_URLS": "[]"}  # no STUN (no network): loopback host candidates do


def config_for(tmp: Path) -> Path:
    """The harness config with a short drain and a short warm period for the old colour."""
    path = make_config(tmp)
    text = path.read_text()
    for old, new in {
        "drain = 5": f"drain = {DRAIN}",
        "scale_down_delay = 120": f"scale_down_delay = {SCALE_DOWN}",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def bg(tmp: Path, config: Path, *args: str, timeout: float = 300) -> str:
    """The bluegreen CLI with the harness environment plus ``EXTRA_ENV`` (the daemon started
    by ``up`` passes its environment on to every instance)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bluegreen", "--config", str(config), *args],
        env={**env(tmp), **EXTRA_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"bluegreen {args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def bg_status(tmp: Path, config: Path) -> dict[str, Any]:
    data = json.loads(bg(tmp, config, "status", "--json"))
    assert isinstance(data, dict)
    return data


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, text: str) -> float:
        t = self.now()
        self.events.append((t, text))
        return t

    def first(self, prefix: str) -> float:
        return next(t for t, e in self.events if e.startswith(prefix))

    def print(self) -> None:
        print("\n--- timeline (seconds since the call was up) ---")
        for t, text in sorted(self.events):
            print(f"{t:7.2f}  {text}")


async def watch(
    timeline: Timeline,
    clients: dict[str, SignallingClient],
    peers: dict[str, Peer],
    public: str,
    stop: asyncio.Event,
) -> None:
    """Sample the clients (closes, welcomes) and the live colour; mark every change."""
    seen = {name: (len(c.closes), len(c.welcomes)) for name, c in clients.items()}
    colour: str | None = None
    last_poll = 0.0
    async with httpx.AsyncClient(base_url=public, trust_env=False, timeout=2) as http:
        while not stop.is_set():
            for name, c in clients.items():
                closes, welcomes = seen[name]
                rtp = peers[name].rtp_bytes
                for code in c.closes[closes:]:
                    timeline.mark(f"{name}: signalling closed with {code} (rtp in {rtp} B)")
                for w in c.welcomes[welcomes:]:
                    timeline.mark(
                        f"{name}: welcome from {w['instance']} admitted={w['admitted']} "
                        f"(rtp in {rtp} B)"
                    )
                seen[name] = (len(c.closes), len(c.welcomes))
            if time.monotonic() - last_poll >= 0.2:
                last_poll = time.monotonic()
                try:
                    r = await http.get("/version")
                    now = r.json().get("color") if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    now = None
                if now is not None and now != colour:
                    if colour is not None:
                        timeline.mark(f"switch: /version says {now} (was {colour})")
                    colour = now
            await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_call_survives_a_blue_green_deploy(state_root: Path) -> None:
    tmp = state_root
    config = config_for(tmp)
    daemon_pid: int | None = None
    instance_pids: set[int] = set()
    try:
        first = tmp / "copies" / "first"
        await asyncio.to_thread(shutil.copytree, REPO, first, ignore=IGNORE)
        bg(tmp, config, "up", "--detach", "--path", str(first))
        info = json.loads((tmp / "bluegreen" / "daemon.json").read_text())
        daemon_pid = int(info["pid"])
        public = str(info["public"])
        st = await wait_idle_live(tmp, config)
        assert st["live_colour"] == "blue"
        instance_pids |= {i["pid"] for i in st["instances"] if i["pid"]}
        blue_instances = {i["id"] for i in st["instances"] if i["colour"] == "blue"}

        db_url = clinic(tmp, "db", "url", "--keep-running").strip().splitlines()[-1]
        await run_call(tmp, config, public, db_url, instance_pids)

        st = await asyncio.to_thread(bg_status, tmp, config)
        instance_pids |= {i["pid"] for i in st["instances"] if i["pid"]}
        assert not blue_instances & {i["id"] for i in st["instances"]}
    finally:
        if daemon_pid is not None and pid_alive(daemon_pid):
            bg(tmp, config, "down", timeout=120)
    assert daemon_pid is not None and not pid_alive(daemon_pid)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in instance_pids) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    assert not [p for p in instance_pids if pid_alive(p)]
    assert not (tmp / "var" / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still running"


async def run_call(
    tmp: Path, config: Path, public: str, db_url: str, instance_pids: set[int]
) -> None:
    settings = Settings(
        environment="test",
        database_url=db_url,
        var_dir=tmp / "var",
        secret_key="unused-by-the-factories-0123456789",
    )
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        sessions = make_sessionmaker(engine)
        doctor = await make_doctor(sessions, settings)
        patient = await make_patient(sessions, settings)
        appt = await make_appointment(sessions, doctor=doctor, patient=patient)
    finally:
        await engine.dispose()

    d_auth, p_auth = await bearer(public, doctor), await bearer(public, patient)
    async with httpx.AsyncClient(base_url=public, headers=p_auth, trust_env=False) as http:
        ticket = (await http.get(f"/api/v1/visits/{appt}/join")).json()
    assert ticket["ice_servers"] == [], ticket  # the instances run without STUN

    timeline = Timeline()
    rtp: dict[str, dict[str, int]] = {"doctor": {}, "patient": {}}
    async with (
        client([public], appt, p_auth) as p_client,
        client([public], appt, d_auth) as d_client,
    ):
        blue = d_client.instance
        assert blue is not None and blue.startswith("blue-")
        assert p_client.instance is not None and p_client.instance.startswith("blue-")
        await d_client.wait_state(lambda s: s["present"]["patient"])
        await d_client.admit()
        await p_client.wait_state(lambda s: s["admitted"])
        d_peer, p_peer = Peer(d_client, role="doctor"), Peer(p_client, role="patient")
        peers = {"doctor": d_peer, "patient": p_peer}
        clients = {"doctor": d_client, "patient": p_client}
        await d_peer.start()
        await p_peer.start()
        stop = asyncio.Event()
        watcher: asyncio.Task[None] | None = None

        def snapshot(label: str) -> None:
            for name, peer in peers.items():
                rtp[name][label] = peer.rtp_bytes

        try:
            await d_peer.call()
            await d_peer.wait_media()
            await p_peer.wait_media()
            timeline = Timeline()
            timeline.mark(
                f"call up: doctor on {d_client.instance}, patient on {p_client.instance} "
                f"(rtp in: doctor {d_peer.rtp_bytes} B, patient {p_peer.rtp_bytes} B)"
            )
            watcher = asyncio.create_task(watch(timeline, clients, peers, public, stop))

            # Deploy a second release (a trivial change) to green; the CLI returns once green
            # is live, blue drained and the analysis passed (blue then waits to be retired).
            second = tmp / "copies" / "second"
            await asyncio.to_thread(shutil.copytree, REPO, second, ignore=IGNORE)
            (second / "DEPLOY_MARKER").write_text("video deploy test\n")
            snapshot("deploy started")
            timeline.mark("deploy started")
            out = await asyncio.to_thread(bg, tmp, config, "deploy", "--path", str(second))
            assert "succeeded" in out, out
            timeline.mark("deploy command returned (blue drained, warm until retired)")
            st = await asyncio.to_thread(bg_status, tmp, config)
            assert st["live_colour"] == "green"
            instance_pids |= {i["pid"] for i in st["instances"] if i["pid"]}
            # The deploy (in retire, or already finished on a slow machine: blue is warm for
            # scale_down_delay only).
            deploy = json.loads(await asyncio.to_thread(bg, tmp, config, "history", "--json"))[0]
            assert deploy["status"] in ("running", "succeeded"), deploy
            steps = {s["name"]: s for s in deploy["steps"]}
            for name in ("switch", "drain"):
                timeline.mark(f"deploy step {name}: {steps[name]['output']}")
            # Nothing ends the sockets by itself: the drain lasted until its deadline.
            assert steps["drain"]["duration_s"] >= DRAIN - 0.2, steps["drain"]

            # Both were closed with a going-away code when blue was told to go away, and
            # reconnected through Envoy, to green.
            for name, c in clients.items():
                assert c.closes[:1] and c.closes[0] in GOING_AWAY, (name, c.closes)
                welcome = await c.wait_welcomes(2, within=10)
                assert str(welcome["instance"]).startswith("green-"), (name, welcome)
                assert welcome["admitted"] is True  # no second admission
                assert c.final is None and c.reconnect_delays
            await p_client.wait_state(lambda s: s["present"]["doctor"])
            await d_client.wait_state(lambda s: s["present"]["patient"])
            await until(
                lambda: any(e.startswith("switch:") for _, e in timeline.events),
                5,
                "the switch was not seen",
            )
            switched = timeline.first("switch:")
            for name in clients:
                closed = timeline.first(f"{name}: signalling closed")
                # They were closed at the drain deadline, not at the switch.
                assert closed - switched >= DRAIN - 0.5, (name, closed, switched)
            snapshot("reconnected to green")
            for name in peers:
                assert rtp[name]["reconnected to green"] > rtp[name]["deploy started"], name
            await d_peer.wait_media()
            await p_peer.wait_media()

            # Blue is stopped after scale_down_delay; media still arrives after that.
            deadline = time.monotonic() + SCALE_DOWN + 30
            while True:
                st = await asyncio.to_thread(bg_status, tmp, config)
                colours = {i["colour"] for i in st["instances"]}
                if "blue" not in colours:
                    break
                assert time.monotonic() < deadline, f"blue still running: {st['instances']}"
                await asyncio.sleep(0.5)
            timeline.mark(
                "blue stopped: instances "
                + ", ".join(f"{i['id']} ({i['colour']})" for i in st["instances"])
            )
            assert colours == {"green"}
            snapshot("blue stopped")
            await d_peer.wait_media()
            await p_peer.wait_media()
            snapshot("media after blue stopped")
            timeline.mark(
                "media still arriving without blue "
                f"(rtp in: doctor {d_peer.rtp_bytes} B, patient {p_peer.rtp_bytes} B)"
            )

            # An ICE restart negotiated through green moves media to a new candidate pair.
            green = d_client.instance
            assert green is not None and green.startswith("green-")
            assert p_client.instance is not None and p_client.instance.startswith("green-")
            before = d_peer.ice_connection
            timeline.mark(f"ICE restart offered by the doctor through {green}")
            await d_peer.restart_ice()
            await p_peer.wait_restarted()
            timeline.mark("ICE restart completed on both peers")
            assert d_peer.restarts == p_peer.restarts == 1
            assert d_peer.ice_connection is not before
            assert d_peer.old_connection is before and not before._protocols  # old closed
            snapshot("ICE restarted")
            await d_peer.wait_media()
            await p_peer.wait_media()
            snapshot("media after ICE restart")
            timeline.mark(
                "media arriving on the restarted pair "
                f"(rtp in: doctor {d_peer.rtp_bytes} B, patient {p_peer.rtp_bytes} B)"
            )
            assert d_peer.errors == [] and p_peer.errors == []
            assert len(d_client.welcomes) == len(p_client.welcomes) == 2  # one reconnect each

            # The doctor ends the visit through green.
            await d_client.end()
            for c in (d_client, p_client):
                final = await c.wait_final(within=10)
                assert final.code == 1000, final
            timeline.mark("visit ended by the doctor through green (both closed 1000)")
        finally:
            stop.set()
            if watcher is not None:
                await watcher
            await d_peer.close()
            await p_peer.close()

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        status = await conn.fetchval("SELECT status FROM appointments WHERE id = $1", appt)
        completed = await conn.fetch(
            "SELECT details FROM appointment_events WHERE appointment_id = $1 "
            "AND kind = 'completed'",
            appt,
        )
        events = await conn.fetch(
            "SELECT e.kind, e.details FROM visit_events e JOIN visits v ON v.id = e.visit_id "
            "WHERE v.appointment_id = $1 ORDER BY e.id",
            appt,
        )
    finally:
        await conn.close()

    timeline.print()
    print("--- reconnect delays (s) ---")
    for name, c in clients.items():
        print(f"{name}: closes {c.closes}, delays {[round(d, 3) for d in c.reconnect_delays]}")
        print(f"{name}: instances {[w['instance'] for w in c.welcomes]}")
    print("--- inbound RTP bytes ---")
    for name, counts in rtp.items():
        print(f"{name}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    print("--- visit events ---")
    for e in events:
        print(f"{e['kind']} {e['details']}")

    print(f"--- appointment {appt}: {status} ---")

    assert status == "completed"
    assert len(completed) == 1 and json.loads(completed[0]["details"]) == {"via": "video visit"}
    kinds = [e["kind"] for e in events]
    assert kinds.count("admitted") == 1 and kinds.count("ended") == 1
    joined = [json.loads(e["details"]) for e in events if e["kind"] == "joined"]
    assert len(joined) == 4
    assert all(j["instance"].startswith("blue-") for j in joined[:2])
    assert all(j["instance"].startswith("green-") for j in joined[2:])
    # Between the admission and the rejoin on green: each participant's blue socket ended
    # with a going-away code, recorded as a disconnect (expected back), not as leaving.
    assert "left" not in kinds
    dropped = [json.loads(e["details"]) for e in events if e["kind"] == "disconnected"]
    assert sorted(d["role"] for d in dropped) == ["doctor", "patient"]
    assert {d["code"] for d in dropped} <= GOING_AWAY, dropped
    assert kinds.index("admitted") < kinds.index("ended")
    for name, counts in rtp.items():
        values = list(counts.values())
        assert values == sorted(values) and values[-1] > values[0], (name, counts)
