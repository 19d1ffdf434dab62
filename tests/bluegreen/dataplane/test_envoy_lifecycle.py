"""Envoy outlives its starter: adoption, hot restart under load, the starter's kill -9."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    APP_PATHS,
    TEST_SETTINGS,
    Load,
    StartEnvoy,
    StartUpstream,
    envoy,
    envoy_factory,
    http,
    served_by,
    table,
    upstream,
)

from bluegreen.dataplane import process
from bluegreen.dataplane.envoy import Envoy


async def test_a_second_envoy_object_adopts_the_running_envoy(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    first = await envoy_factory(state_dir=tmp_path / "state")
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    t = table(b1, g1, live="blue")
    await first.apply(t)

    second = Envoy(TEST_SETTINGS, state_dir=tmp_path / "state", app_paths=APP_PATHS)
    assert await second.start() is True  # adopted, no new process
    try:
        assert second.pid == first.pid
        assert second.urls() == first.urls()
        assert second.table == t
        await second.apply(t.with_live("green"))
        assert await served_by(http, second.urls()["public"]) == "g1"
    finally:
        await second.stop()
    assert first.pid is not None and not process.alive(first.pid)


async def test_hot_restart_keeps_serving_with_no_failed_request(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, b2 = await upstream("b1", "blue"), await upstream("b2", "blue")
    await envoy.apply(table(b1, b2))
    old_pid, urls = envoy.pid, envoy.urls()
    assert old_pid is not None
    async with Load(urls["public"]).running(clients=8) as load:
        await asyncio.sleep(0.5)
        await envoy.hot_restart()
        await asyncio.sleep(1.0)
        before_drain = load.ok
    assert envoy.pid != old_pid
    assert envoy.urls() == urls  # the same sockets, handed over
    assert load.failed == []
    assert load.ok > before_drain > 0
    assert await process.wait_gone(old_pid, 30)  # the old epoch drained and left
    assert await served_by(http, urls["public"]) in ("b1", "b2")
    # The new epoch is the one this object drives.
    await envoy.apply(table(b1))
    assert await served_by(http, urls["public"]) == "b1"


STARTER = """
import asyncio, json, sys
from pathlib import Path
from dataclasses import replace
from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings
from bluegreen.dataplane.table import Backend, RoutingTable

async def main():
    settings = DataPlaneSettings().with_ports()
    envoy = Envoy(settings, state_dir=Path(sys.argv[1]), app_paths=AppPaths())
    await envoy.start()
    port = int(sys.argv[2])
    await envoy.apply(RoutingTable("blue", None, (Backend("b1", "blue", "127.0.0.1", port),)))
    print(json.dumps({"pid": envoy.pid, "urls": envoy.urls()}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_envoy_survives_the_death_of_the_process_that_started_it(
    upstream: StartUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    b1 = await upstream("b1", "blue")
    state = tmp_path / "state"
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STARTER, str(state), str(b1.port), stdout=asyncio.subprocess.PIPE
    )
    adopter = Envoy(TEST_SETTINGS, state_dir=state, app_paths=APP_PATHS)
    try:
        assert starter.stdout is not None
        async with asyncio.timeout(60):
            info = json.loads(await starter.stdout.readline())
        starter.send_signal(signal.SIGKILL)
        await starter.wait()
        assert process.alive(info["pid"])
        for _ in range(5):
            assert await served_by(http, info["urls"]["public"]) == "b1"
        assert await adopter.start() is True
        assert adopter.pid == info["pid"]
    finally:
        if starter.returncode is None:
            starter.kill()
            await starter.wait()
        await adopter.stop()
    assert not process.alive(info["pid"])
