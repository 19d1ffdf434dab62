"""Envoy's own health checks, retries, outlier detection and panic mode, against real upstreams."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    TEST_SETTINGS,
    Load,
    StartEnvoy,
    StartUpstream,
    envoy,
    envoy_factory,
    eventually,
    healthy,
    http,
    served_by,
    table,
    upstream,
)

from bluegreen.dataplane.envoy import Envoy


async def test_an_instance_failing_its_ready_check_gets_no_traffic(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, b2 = await upstream("b1", "blue"), await upstream("b2", "blue")
    await envoy.apply(table(b1, b2))

    async def both() -> bool:
        return await healthy(envoy, "blue") == 2

    await eventually(both)
    b2.ready = False

    async def one() -> bool:
        return await healthy(envoy, "blue") == 1

    await eventually(one)

    async def only_b1() -> bool:
        # Envoy's workers pick up a health change a moment after its admin shows it.
        return {await served_by(http, envoy.urls()["public"]) for _ in range(10)} == {"b1"}

    await eventually(only_b1)
    seen = {await served_by(http, envoy.urls()["public"]) for _ in range(20)}
    assert seen == {"b1"}


async def test_a_dead_instance_is_removed_and_no_request_fails(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, b2 = await upstream("b1", "blue"), await upstream("b2", "blue")
    await envoy.apply(table(b1, b2))
    async with Load(envoy.urls()["public"]).running(clients=16) as load:
        await asyncio.sleep(0.3)
        await b2.stop()  # connects to it are refused from now on
        await asyncio.sleep(0.5)
        await b2.start()  # restarted on the same port, as the supervisor does
        await asyncio.sleep(0.5)
    assert load.failed == []
    assert load.served.get("b2", 0) > 0
    await b2.stop()
    for _ in range(30):  # retries on connect failure cover the time until the check sees it
        assert await served_by(http, envoy.urls()["public"]) == "b1"

    async def removed() -> bool:
        return await healthy(envoy, "blue") == 1

    await eventually(removed)


async def test_connect_failure_is_retried_even_for_a_post(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    # Health checks too slow to notice the death: only the retry can save the request.
    envoy = await envoy_factory(replace(TEST_SETTINGS, health_interval=60.0))
    b1, b2 = await upstream("b1", "blue"), await upstream("b2", "blue")
    await envoy.apply(table(b1, b2))
    await b2.stop()
    for _ in range(20):
        async with http.post(envoy.urls()["public"] + "/echo", data=b"x") as resp:
            assert resp.status == 200
            assert (await resp.json())["served_by"] == "b1"


async def test_a_reset_is_retried_only_when_the_request_is_safe_to_repeat(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1 = await upstream("b1", "blue")
    await envoy.apply(table(b1))
    url = envoy.urls()["public"] + "/flaky"
    b1.fail_next = 1
    async with http.get(url) as resp:
        assert resp.status == 200  # GET: retried
    b1.fail_next = 1
    async with http.post(url, data=b"book") as resp:
        assert resp.status == 503  # POST: the app may have acted, not repeated
        assert "error" in await resp.json()
    b1.fail_next = 1
    async with http.post(url, data=b"book", headers={"Idempotency-Key": "k1"}) as resp:
        assert resp.status == 200  # the key makes a repeat harmless
    assert b1.arrivals.count("/flaky") == 5


async def test_a_try_that_times_out_is_retried_when_safe(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(replace(TEST_SETTINGS, per_try_timeout=0.5))
    b1 = await upstream("b1", "blue")
    await envoy.apply(table(b1))
    b1.slow_next = 1
    async with http.get(envoy.urls()["public"] + "/flaky") as resp:
        assert resp.status == 200
        assert await resp.text() == "b1"
    b1.slow_next = 1
    async with http.post(envoy.urls()["public"] + "/flaky") as resp:
        assert resp.status == 504  # not safe to repeat: the timeout is the answer


async def test_when_every_instance_is_unready_requests_are_still_answered(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    # A shared cause (the database restarting) fails every ready check at once; the
    # instances can still answer /version, so Envoy's panic mode keeps sending to them.
    b1, b2 = await upstream("b1", "blue"), await upstream("b2", "blue")
    await envoy.apply(table(b1, b2))
    b1.ready = b2.ready = False

    async def none() -> bool:
        return await healthy(envoy, "blue") == 0

    await eventually(none)
    for _ in range(10):
        async with http.get(envoy.urls()["public"] + "/version") as resp:
            assert resp.status == 200
