"""Shadow mirroring and per route group statistics through a real Envoy."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import json

import aiohttp
import pytest
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    StartUpstream,
    envoy,
    envoy_factory,
    eventually,
    http,
    served_by,
    table,
    upstream,
)

from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.table import Shadow


async def _echo(http: aiohttp.ClientSession, url: str, method: str = "GET") -> dict[str, str]:
    async with http.request(method, url + "/echo", data=b"x" if method == "POST" else None) as r:
        assert r.status == 200, await r.text()
        if method == "HEAD":
            return {}
        return dict(json.loads(await r.read()))


async def test_shadow_mirrors_safe_reads_only_and_marks_their_host(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    t = table(b1, g1, live="blue", preview="green").with_shadow(Shadow("green", 1.0))
    await envoy.apply(t)
    assert await envoy.read_table() == t
    url = envoy.urls()["public"]
    hostname, port = url.removeprefix("http://").rsplit(":", 1)
    before = await envoy.shadow_stats()
    for _ in range(5):
        assert (await _echo(http, url))["served_by"] == "b1"  # the user's answer is blue's
    await _echo(http, url, "HEAD")
    for method in ("POST", "PUT", "DELETE"):
        assert (await _echo(http, url, method))["served_by"] == "b1"
    async with http.ws_connect(url + "/ws") as ws:
        assert (await ws.receive_str()) == "hello from b1"
        await ws.close()

    async def mirrored() -> bool:
        return (await envoy.shadow_totals())["green"].requests >= 6

    await eventually(mirrored)
    # Only the GETs and the HEAD, each marked by Envoy with "-shadow" on the Host's name
    # (before the port: "127.0.0.1-shadow:8000").
    assert sorted(m for m, _, _ in g1.seen) == ["GET"] * 5 + ["HEAD"]
    assert {h for _, _, h in g1.seen} == {f"{hostname}-shadow:{port}"}
    assert all(not h.endswith("-shadow") for _, _, h in b1.seen)
    assert "/ws" not in g1.arrivals
    after = await envoy.shadow_stats()
    window = after[("green", "pages")] - before[("green", "pages")]
    assert window.count("2xx") == 6
    assert after[("blue", "pages")].requests == 0
    # Preview traffic to green is not counted as shadow traffic.
    await served_by(http, envoy.urls()["preview"])
    assert (await envoy.shadow_stats())[("green", "pages")].requests == after[
        ("green", "pages")
    ].requests
    totals = await envoy.shadow_totals()
    assert totals["green"].count("2xx") >= 6


async def test_shadow_share_zero_and_off_mirror_nothing(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    url = envoy.urls()["public"]
    for shadow in (Shadow("green", 0.0), None):
        await envoy.apply(table(b1, g1, live="blue").with_shadow(shadow))
        for _ in range(20):
            assert (await _echo(http, url))["served_by"] == "b1"
    # A request that is mirrored arrives at green right after blue answered it: if any of
    # those 40 had been, the next mirrored one would find it there first.
    await envoy.apply(table(b1, g1, live="blue").with_shadow(Shadow("green", 1.0)))
    await _echo(http, url)
    await eventually(lambda: _true(len(g1.seen) >= 1))
    assert len(g1.seen) == 1


async def _true(value: bool) -> bool:
    return value


async def test_shadow_share_mirrors_about_that_share(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    await envoy.apply(table(b1, g1, live="blue").with_shadow(Shadow("green", 0.25)))
    url = envoy.urls()["public"]
    for _ in range(400):
        await _echo(http, url)
    await envoy.apply(table(b1, g1, live="blue"))

    async def all_answered() -> bool:  # every mirror that reached green is counted
        return (await envoy.shadow_totals())["green"].requests == len(g1.seen)

    await eventually(all_answered)
    n = len(g1.seen)
    # 400 draws at 25%: mean 100, sd ~8.7; [50, 160] is out of reach of a correct split.
    assert 50 <= n <= 160
    assert {m for m, _, _ in g1.seen} == {"GET"}


@pytest.mark.parametrize("shadow", [None, Shadow("green", 1.0)])
async def test_requests_are_counted_in_their_route_group_and_colour(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession, shadow: Shadow | None
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    await envoy.apply(table(b1, g1, live="blue", preview="green").with_shadow(shadow))
    urls = envoy.urls()
    before = await envoy.group_stats()
    for path, n in (("/echo", 3), ("/api/v1/things", 4), ("/static/app.css", 5)):
        for _ in range(n):
            async with http.get(urls["public"] + path) as resp:
                assert resp.status in (200, 404)
    await served_by(http, urls["preview"])  # preview is not user traffic
    after = await envoy.group_stats()
    window = {k: after[k] - before[k] for k in after}
    assert window[("blue", "pages")].requests == 3
    assert window[("blue", "pages")].count("2xx") == 3
    assert window[("blue", "api")].count("4xx") == 4
    assert window[("blue", "static")].requests == 5
    assert sum(window[("blue", "static")].buckets) == 5
    assert window[("green", "pages")].requests == 0
    if shadow is not None:

        async def all_answered() -> bool:  # counted once green's answer is in
            return (await envoy.shadow_totals())["green"].requests >= 12

        await eventually(all_answered)
        mirrored = await envoy.shadow_stats()
        assert mirrored[("green", "pages")].requests == 3
        assert mirrored[("green", "api")].requests == 4
        assert mirrored[("green", "static")].requests == 5
        # Their latencies too: the shadow's p95 is what is compared with blue's.
        assert sum(mirrored[("green", "api")].buckets) == 4
        assert mirrored[("green", "pages")].p95() is not None


async def test_a_client_may_not_send_a_shadow_host(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    """The app skips the audit trail for a mirrored read, so a user must not be able to
    pass for one: a client's Host ending in -shadow (any case) is refused before any colour
    sees it, on every listener, while Envoy's own mirror still reaches green."""
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    t = table(b1, g1, live="blue", preview="green").with_shadow(Shadow("green", 1.0))
    await envoy.apply(t)
    urls = envoy.urls()
    for listener in ("public", "preview"):
        for host in ("clinic.example-shadow", "127.0.0.1-shadow:8080", "x-SHADOW"):
            async with http.get(urls[listener] + "/echo", headers={"Host": host}) as r:
                body = await r.text()
                assert r.status == 400, (listener, host, body)
                assert json.loads(body)["error"] == "bad_host"
    assert b1.seen == [] and g1.seen == []
    assert (await _echo(http, urls["public"]))["served_by"] == "b1"

    async def mirrored() -> bool:
        return len(g1.seen) == 1

    await eventually(mirrored)
