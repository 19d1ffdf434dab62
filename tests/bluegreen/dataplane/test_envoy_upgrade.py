"""Adopting an Envoy started by an older version of this package (an older layout)."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    APP_PATHS,
    TEST_SETTINGS,
    Load,
    StartEnvoy,
    StartUpstream,
    envoy_factory,
    eventually,
    http,
    served_by,
    table,
    upstream,
)

from bluegreen.dataplane.envoy import LAYOUT_VERSION, Envoy
from bluegreen.dataplane.table import Shadow


async def test_an_older_layout_is_hot_restarted_onto_this_one_without_failing_a_request(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = await envoy_factory(state_dir=state)
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    t = table(b1, g1, live="blue")
    await first.apply(t)
    # What version 1 left behind: no layout in the pid file, no route file for HTTPS.
    record = json.loads(first.layout.pid_file.read_text())
    assert record.pop("layout") == LAYOUT_VERSION
    first.layout.pid_file.write_text(json.dumps(record))
    first.layout.xds_file("rds_https").unlink()

    second = Envoy(TEST_SETTINGS, state_dir=state, app_paths=APP_PATHS)
    async with Load(first.urls()["public"]).running(clients=4) as load:
        assert await second.start() is True
    try:
        assert second.pid != record["pid"]  # a new epoch took over the sockets
        assert json.loads(second.layout.pid_file.read_text())["layout"] == LAYOUT_VERSION
        assert second.layout.xds_file("rds_https").exists()
        assert load.failed == []
        assert load.ok > 0
        await second.apply(t.with_shadow(Shadow("green", 1.0)))  # confirms, no 30 s wait
        await served_by(http, second.urls()["public"])

        async def mirrored() -> bool:
            return (await second.shadow_totals())["green"].requests >= 1

        await eventually(mirrored)
    finally:
        await second.stop()
