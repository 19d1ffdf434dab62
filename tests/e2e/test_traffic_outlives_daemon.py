"""Traffic outlives the controller: the clinic, deployed by the real daemon (CLI, subprocesses)
and served through Envoy, under continuous mixed load (pages, API, bookings) while the daemon
is killed with SIGKILL and kept dead for 10 s, stopped with SIGTERM (a graceful restart of
the daemon alone), and while Envoy is hot-restarted: five times each, then started again.

Every round: no request failed, exactly the configured number of instance processes run (counted
from /proc, not from the daemon's word), and ``bluegreen status`` names exactly those.
The load rate is printed, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
from bluegreen_harness import (
    REPO,
    SMOKE_PASSWORD,
    Stats,
    bluegreen,
    booking_loop,
    clinic,
    free_slots,
    get_loop,
    make_config,
    pid_alive,
    state_root,
    wait_idle_live,
)

from bluegreen import processes

pytestmark = pytest.mark.slow
__all__ = ["state_root"]  # the fixture, imported so pytest finds it here

ROUNDS = 5  # of each kind, as the issue asks
DEAD_SECONDS = 10.0
REPLICAS = 2  # bluegreen.toml: [replicas] blue = 2
TARGET_RATE = 240  # requests/s the load aims at (>= 200 wanted); reported, never asserted
GET_CLIENTS = 48
BOOKING_CLIENTS = 2


def daemon_pid(tmp: Path) -> int:
    return int(json.loads((tmp / "bluegreen" / "daemon.json").read_text())["pid"])


def instance_processes(tmp: Path) -> dict[int, str]:
    """Every running process that is an instance of this state dir: pid -> instance id."""
    return {
        pid: env[processes.INSTANCE_ENV]
        for pid, env in processes.marked(tmp / "bluegreen").items()
        if processes.INSTANCE_ENV in env
    }


def daemon_log_tail(tmp: Path, lines: int = 40) -> str:
    text = (tmp / "bluegreen" / "daemon.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


async def gone(pid: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        await asyncio.sleep(0.1)


async def one_round(tmp: Path, config: Path, kind: str) -> dict[str, Any]:
    """Take the control plane (or Envoy) down one way, bring it back; what status says."""
    t0 = time.monotonic()
    if kind == "envoy hot restart":
        out = await asyncio.to_thread(bluegreen, tmp, config, "dataplane", "restart")
        assert "hot restarted" in out, out
    else:
        pid = daemon_pid(tmp)
        os.kill(pid, signal.SIGKILL if kind == "kill -9" else signal.SIGTERM)
        await gone(pid)
        await asyncio.sleep(DEAD_SECONDS)
        await asyncio.to_thread(bluegreen, tmp, config, "up", "--detach")
    st = await wait_idle_live(tmp, config, within=180)
    return {"kind": kind, "seconds": round(time.monotonic() - t0, 1), "status": st}


async def test_daemon_death_restart_and_envoy_hot_restart_fail_no_request(
    state_root: Path,
) -> None:
    tmp = state_root
    config = make_config(tmp)
    rounds: list[dict[str, Any]] = []
    try:
        bluegreen(tmp, config, "up", "--detach", "--path", str(REPO))
        st = await wait_idle_live(tmp, config, within=900)  # the first venv: pip, slow here
        assert st["live_colour"] == "blue"
        public = json.loads((tmp / "bluegreen" / "daemon.json").read_text())["public"]
        db_url = clinic(tmp, "db", "url", "--keep-running").strip().splitlines()[-1]
        clinic(tmp, "seed", extra={"CLINIC_DATABASE_URL": db_url})
        async with httpx.AsyncClient(base_url=public, trust_env=False, timeout=30) as c:
            resp = await c.post(
                "/api/v1/auth/token",
                json={
                    "email": "smoke-patient@smoke.example.org",
                    "password": SMOKE_PASSWORD,
                    "name": "e2e",
                },
            )
            assert resp.status_code == 201, resp.text
            auth = {"Authorization": f"Bearer {resp.json()['token']}"}
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        for slot in await free_slots(public, auth):
            queue.put_nowait(slot)

        stats = Stats()
        stop = asyncio.Event()
        t_load = time.monotonic()
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=GET_CLIENTS + BOOKING_CLIENTS),
        ) as session:
            interval = GET_CLIENTS / TARGET_RATE
            tasks = [
                asyncio.create_task(get_loop(session, public, stats, stop, interval))
                for _ in range(GET_CLIENTS)
            ] + [
                asyncio.create_task(booking_loop(session, public, stats, stop, queue, auth))
                for _ in range(BOOKING_CLIENTS)
            ]
            try:
                for kind in ("kill -9", "SIGTERM", "envoy hot restart"):
                    for _ in range(ROUNDS):
                        r = await one_round(tmp, config, kind)
                        running = instance_processes(tmp)
                        listed = {i["pid"]: i["id"] for i in r["status"]["instances"]}
                        # Exactly the configured instances run, and status names exactly them.
                        why = (kind, running, listed, daemon_log_tail(tmp))
                        assert len(running) == REPLICAS, why
                        assert running == listed, why
                        assert r["status"]["live_colour"] == "blue"
                        rounds.append({"kind": kind, "seconds": r["seconds"]})
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        load_seconds = time.monotonic() - t_load
        rate = (stats.ok + len(stats.failures)) / load_seconds
        print(f"rounds: {rounds}\nrequests ok: {stats.ok}, load rate {rate:.0f}/s (reported)")

        assert stats.failures == [], stats.failures[:10]
        assert len(rounds) == 3 * ROUNDS
        assert stats.bookings, "no booking succeeded"
        conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch("SELECT id, reason FROM appointments WHERE reason LIKE 'e2e-%'")
        finally:
            await conn.close()
        by_reason: dict[str, list[int]] = {}
        for row in rows:
            by_reason.setdefault(row["reason"], []).append(int(row["id"]))
        for key, appointment_id in stats.bookings.items():
            assert by_reason.get(key) == [appointment_id], (key, by_reason.get(key))
        history = json.loads(bluegreen(tmp, config, "history", "--json"))
        assert [d["status"] for d in history] == ["succeeded"], history
    finally:
        bluegreen(tmp, config, "down", timeout=120)
    # `down` stops everything: no instance, no Envoy, no database is left.
    assert instance_processes(tmp) == {}
    assert not processes.marked(tmp / "bluegreen")
    envoy_pid_file = tmp / "bluegreen" / "envoy" / "envoy.pid"
    assert not envoy_pid_file.exists()
    assert not (tmp / "var" / "pgdata" / "postmaster.pid").exists()
