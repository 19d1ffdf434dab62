"""Phased switch through a real Envoy: weighted new sessions, sticky by cookie."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import json
import ssl
from http.cookies import SimpleCookie

import aiohttp
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    StartUpstream,
    Upstream,
    envoy,
    envoy_factory,
    http,
    table,
    upstream,
)
from yarl import URL

from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.table import COOKIE, RoutingTable, Weights


async def _get(url: str, cookie: str | None = None) -> tuple[str, list[str]]:
    """One request with no cookie jar: who served it, and the Set-Cookie headers."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(url + "/echo", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return str(json.loads(await resp.read())["served_by"]), resp.headers.getall(
            "Set-Cookie", []
        )


async def _phased(upstream: StartUpstream) -> tuple[Upstream, Upstream, RoutingTable]:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    return b1, g1, table(b1, g1, live="blue")


async def test_weights_split_new_sessions_and_the_answer_sets_the_cookie(
    envoy: Envoy, upstream: StartUpstream
) -> None:
    _, _, t = await _phased(upstream)
    t = t.with_weights(Weights("green", 10))
    await envoy.apply(t)  # returns once Envoy routes by it, like any route change
    assert await envoy.read_table() == t
    url = envoy.urls()["public"]
    served = {"b1": 0, "g1": 0}
    for _ in range(400):
        who, cookies = await _get(url)
        served[who] += 1
        colour = "green" if who == "g1" else "blue"
        assert cookies == [f"{COOKIE}={colour}; Path=/; HttpOnly; SameSite=Lax"]
    # 400 draws at 10%: mean 40, sd 6; 16..80 (4%..20%) is out of reach of a correct split.
    assert 16 <= served["g1"] <= 80, served
    assert served["b1"] + served["g1"] == 400


async def test_a_session_stays_on_its_colour_and_weight_zero_sends_all_to_blue(
    envoy: Envoy, upstream: StartUpstream
) -> None:
    _, _, t = await _phased(upstream)
    await envoy.apply(t.with_weights(Weights("green", 10)))
    url = envoy.urls()["public"]
    for colour, instance in (("green", "g1"), ("blue", "b1")):
        for _ in range(100):
            who, cookies = await _get(url, colour)
            assert who == instance
            assert cookies == []  # the cookie is set once, on the weighted pick
    # Real browsers (a cookie jar each, cookies kept for an IP host): the first one that
    # lands on green stays on green.
    browser = await _green_browser(url)
    try:
        for _ in range(100):
            async with browser.get(url + "/echo") as resp:
                assert (await resp.json())["served_by"] == "g1"
        # Weight back to 0 (a breach): everyone is on blue at once, cookie or not.
        await envoy.apply(t.with_weights(Weights("green", 0)))
        for _ in range(20):
            async with browser.get(url + "/echo") as resp:
                assert (await resp.json())["served_by"] == "b1"
            assert (await _get(url))[0] == "b1"
    finally:
        await browser.close()


async def _green_browser(url: str) -> aiohttp.ClientSession:
    """A browser whose first request landed on green (1 in 10): 0.9**200 to fail."""
    for _ in range(200):
        browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with browser.get(url + "/echo") as resp:
            if (await resp.json())["served_by"] == "g1":
                assert browser.cookie_jar.filter_cookies(URL(url))[COOKIE].value == "green"
                return browser
        await browser.close()
    raise AssertionError("no browser landed on green")


async def test_weight_100_and_no_weights_are_atomic(envoy: Envoy, upstream: StartUpstream) -> None:
    _, _, t = await _phased(upstream)
    url = envoy.urls()["public"]
    for weights, expected in ((Weights("green", 100), "g1"), (None, "b1")):
        await envoy.apply(t.with_weights(weights))
        for cookie in (None, "blue", "green"):
            for _ in range(10):
                assert await _get(url, cookie) == (expected, [])


async def test_websocket_upgrades_follow_the_cookie_rule(
    envoy: Envoy, upstream: StartUpstream
) -> None:
    _, _, t = await _phased(upstream)
    await envoy.apply(t.with_weights(Weights("green", 50)))
    url = envoy.urls()["public"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        for colour, instance in (("green", "g1"), ("blue", "b1")):
            for _ in range(10):
                async with session.ws_connect(
                    url + "/ws", headers={"Cookie": f"a=1; {COOKIE}={colour}"}
                ) as ws:
                    assert (await ws.receive_str()) == f"hello from {instance}"
                    await ws.close()
        # Without a cookie: the weighted pick, and the 101 answer sets the cookie.
        seen: set[str] = set()
        for _ in range(30):
            async with session.ws_connect(url + "/ws") as ws:
                hello = await ws.receive_str()
                cookie = SimpleCookie(ws._response.headers["Set-Cookie"])
                assert hello == f"hello from {cookie[COOKIE].value[0]}1"
                seen.add(hello)
                await ws.close()
        assert seen == {"hello from b1", "hello from g1"}  # 2 * 0.5**30 to fail


async def test_the_https_listener_sets_a_secure_cookie(
    envoy: Envoy, upstream: StartUpstream
) -> None:
    assert "https" in envoy.urls()
    _, _, t = await _phased(upstream)
    await envoy.apply(t.with_weights(Weights("green", 50)))
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    connector = aiohttp.TCPConnector(ssl=insecure)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(envoy.urls()["https"] + "/echo") as resp,
    ):
        assert resp.status == 200
        (cookie,) = resp.headers.getall("Set-Cookie")
        assert cookie.endswith("; Path=/; HttpOnly; SameSite=Lax; Secure")
    _, plain = await _get(envoy.urls()["public"])
    assert not plain[0].endswith("Secure")
