"""Websockets during a phased switch, through a real Envoy: a socket already open stays on
the colour it opened on while the weights change (a step up, the switch, a breach sending
everyone back); only new visits follow the new table. Envoy keeps an established upstream
connection when routes change; these tests prove it rather than assume it."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import aiohttp
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    StartUpstream,
    envoy,
    envoy_factory,
    http,
    served_by,
    table,
    upstream,
)

from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.table import COOKIE, RoutingTable, Weights


async def _echo(ws: aiohttp.ClientWebSocketResponse, text: str) -> str:
    await ws.send_str(text)
    return await ws.receive_str()


async def test_open_websockets_keep_their_colour_through_every_weight_change(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    base = table(b1, g1, live="blue")
    await envoy.apply(base.with_weights(Weights("green", 10)))
    url = envoy.urls()["public"]
    jarless = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    try:
        on_green = await jarless.ws_connect(url + "/ws", headers={"Cookie": f"{COOKIE}=green"})
        on_blue = await jarless.ws_connect(url + "/ws", headers={"Cookie": f"{COOKIE}=blue"})
        assert await on_green.receive_str() == "hello from g1"
        assert await on_blue.receive_str() == "hello from b1"
        # Each table a deploy applies in turn, and the instance a NEW visit without a
        # cookie lands on under it (None: split, either).
        tables: list[tuple[str, RoutingTable, str | None]] = [
            ("50%", base.with_weights(Weights("green", 50)), None),
            ("switch", base.with_live("green").with_weights(None), "g1"),
            ("breach: all back", base.with_live("blue").with_weights(None), "b1"),
            ("10% again", base.with_weights(Weights("green", 10)), None),
            ("100%", base.with_weights(Weights("green", 100)), "g1"),
        ]
        for n, (what, t, new_visit) in enumerate(tables):
            await envoy.apply(t)
            if new_visit is not None:
                assert await served_by(http, url) == new_visit, what
                async with jarless.ws_connect(url + "/ws") as fresh:
                    assert await fresh.receive_str() == f"hello from {new_visit}", what
            # The sockets opened at 10 % still reach the instance they opened on.
            assert await _echo(on_green, f"g{n}") == f"g1:g{n}", what
            assert await _echo(on_blue, f"b{n}") == f"b1:b{n}", what
        # The deploy's drain sees them: a colour is retired only once its sockets are gone
        # (or its instances told to go away, which closes them with a going-away code).
        assert await envoy.drain("blue", 0.3) == 1
        await on_blue.close()
        assert await envoy.drain("blue", 5.0) == 0
        await on_green.close()
    finally:
        await jarless.close()
