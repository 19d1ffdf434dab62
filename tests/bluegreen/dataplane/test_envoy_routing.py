"""Routing through a real Envoy: apply, switch under load, preview, modes, stats, websockets."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import asyncio

import aiohttp
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    Load,
    StartUpstream,
    envoy,
    envoy_factory,
    http,
    served_by,
    table,
    upstream,
)

from bluegreen.dataplane.envoy import Envoy


async def test_switch_under_load_fails_no_request_and_is_applied_on_return(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    blue = [await upstream("b1", "blue"), await upstream("b2", "blue")]
    green = [await upstream("g1", "green"), await upstream("g2", "green")]
    t = table(*blue, *green, live="blue")
    await envoy.apply(t)
    assert await envoy.read_table() == t
    public = envoy.urls()["public"]
    async with Load(public).running(clients=8) as load:
        for i in range(6):
            colour = "green" if i % 2 == 0 else "blue"
            t = t.with_live(colour)
            await envoy.apply(t)
            # apply() returned: Envoy already routes by the new table.
            assert (await served_by(http, public))[0] == colour[0]
            assert await envoy.read_table() == t
            await asyncio.sleep(0.3)
    assert load.failed == []
    assert load.ok > 0
    assert set(load.served) == {"b1", "b2", "g1", "g2"}


async def test_preview_listener_sees_the_preview_colour(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    await envoy.apply(table(b1, g1, live="blue", preview="green"))
    urls = envoy.urls()
    assert await served_by(http, urls["public"]) == "b1"
    assert await served_by(http, urls["preview"]) == "g1"
    # Without a preview colour, preview shows live.
    await envoy.apply(table(b1, g1, live="blue", preview=None))
    assert await served_by(http, urls["preview"]) == "b1"


async def test_nothing_live_maintenance_and_paused_are_503s_with_retry_after(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    urls = envoy.urls()
    async with http.get(urls["public"] + "/echo") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "nothing_live"
        assert resp.headers["Retry-After"] == "3"
        assert resp.headers["X-Request-Id"]
    b1 = await upstream("b1", "blue")
    t = table(b1, live="blue")
    await envoy.apply(t.with_mode("maintenance"))
    async with http.get(urls["public"] + "/echo", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 503
        assert "maintenance" in await resp.text()
        assert resp.headers["Content-Type"].startswith("text/html")
    assert await served_by(http, urls["preview"]) == "b1"  # preview still works
    await envoy.apply(t.with_mode("paused"))
    for url in (urls["public"], urls["preview"]):
        async with http.get(url + "/echo") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "paused"
    await envoy.apply(t)
    assert await served_by(http, urls["public"]) == "b1"


async def test_stats_count_requests_by_colour_status_class_and_latency(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    await envoy.apply(table(b1, g1, live="blue", preview="green"))
    before = await envoy.stats()
    urls = envoy.urls()
    for _ in range(7):
        await served_by(http, urls["public"])
    for _ in range(3):
        async with http.get(urls["public"] + "/missing") as resp:
            assert resp.status == 404
    await served_by(http, urls["preview"])
    window = {c: s - before[c] for c, s in (await envoy.stats()).items()}
    assert window["blue"].count("2xx") == 7
    assert window["blue"].count("4xx") == 3
    assert window["blue"].requests == 10
    assert sum(window["blue"].buckets) == 10
    assert window["blue"].p95() is not None
    assert window["green"].requests == 1


async def test_websocket_passes_both_ways_and_stays_on_its_instance_at_a_switch(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    t = table(b1, g1, live="blue")
    await envoy.apply(t)
    async with http.ws_connect(envoy.urls()["public"] + "/ws") as ws:
        assert (await ws.receive_str()) == "hello from b1"
        await ws.send_str("one")
        assert (await ws.receive_str()) == "b1:one"
        await envoy.apply(t.with_live("green"))
        assert await served_by(http, envoy.urls()["public"]) == "g1"
        await ws.send_str("two")
        assert (await ws.receive_str()) == "b1:two"  # the open socket stayed on blue
        await ws.close()
    async with http.ws_connect(envoy.urls()["public"] + "/ws") as ws:
        assert (await ws.receive_str()) == "hello from g1"
        await ws.send_str("three")
        assert (await ws.receive_str()) == "g1:three"


async def test_drain_counts_requests_still_in_flight_to_a_colour(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    t = table(b1, g1, live="blue")
    await envoy.apply(t)
    assert await envoy.drain("blue", 0.5) == 0
    async with http.ws_connect(envoy.urls()["public"] + "/ws") as ws:
        assert (await ws.receive_str()) == "hello from b1"
        await envoy.apply(t.with_live("green"))
        assert await envoy.drain("blue", 0.3) == 1  # the websocket is still open
        await ws.close()
    assert await envoy.drain("blue", 5.0) == 0
