"""Limits and trustworthy headers at the edge, against a real Envoy."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
from aiohttp import WSMsgType
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    TEST_SETTINGS,
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

MiB = 1024 * 1024


async def test_a_64_kib_header_gets_431(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    await envoy.apply(table(await upstream("b1", "blue")))
    async with http.get(envoy.urls()["public"] + "/echo", headers={"X-Big": "a" * 64 * 1024}) as r:
        assert r.status == 431
        assert r.headers["Content-Type"] == "application/json"
        assert (await r.json())["error"]  # rejected before a request id existed
    many = {f"X-H{i}": "v" for i in range(150)}
    async with http.get(envoy.urls()["public"] + "/echo", headers=many) as r:
        assert r.status == 431
    assert await served_by(http, envoy.urls()["public"]) == "b1"


async def test_a_body_over_the_limit_gets_413_with_or_without_content_length(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(replace(TEST_SETTINGS, max_body_bytes=MiB))
    b1 = await upstream("b1", "blue")
    await envoy.apply(table(b1))
    url = envoy.urls()["public"] + "/echo"
    async with http.post(url, data=io.BytesIO(b"x" * (2 * MiB))) as r:
        assert r.status == 413
        assert (await r.json())["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"y" * (64 * 1024)

    status: int | None = None
    with contextlib.suppress(aiohttp.ClientError):  # Envoy may close while we still send
        async with http.post(url, data=chunks()) as r:
            status = r.status
    assert status in (413, None)
    async with http.post(url, data=io.BytesIO(b"z" * (MiB - 10))) as r:
        assert r.status == 200
        assert (await r.json())["body_len"] == MiB - 10
    assert "/echo" in b1.arrivals


async def test_a_gzip_body_reaches_the_app_byte_for_byte(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    await envoy.apply(table(await upstream("b1", "blue")))
    body = gzip.compress(b'{"note": "' + b"a" * 100_000 + b'"}')
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with http.post(envoy.urls()["public"] + "/echo", data=body, headers=headers) as r:
        assert r.status == 200
        seen = await r.json()
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["body_len"] == len(body)
    assert seen["headers"]["content-encoding"] == "gzip"
    assert seen["headers"]["content-length"] == str(len(body))


async def test_forwarded_headers_come_from_the_real_peer_and_listener(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1 = await upstream("b1", "blue")
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    # With a trusted proxy in front, what it says about the client and scheme is believed.
    for hops, client_ip, proto in ((0, "127.0.0.1", "http"), (1, "6.6.6.6", "https")):
        envoy = await envoy_factory(replace(TEST_SETTINGS, trusted_hops=hops))
        await envoy.apply(table(b1))
        async with http.get(envoy.urls()["public"] + "/echo", headers=spoof) as r:
            seen = (await r.json())["headers"]
            assert r.headers["X-Request-Id"] == seen["x-request-id"]
        # Envoy appends the peer (for a loopback peer, its own address) to what the
        # client claimed, and names the client it trusts in x-envoy-external-address.
        assert seen["x-forwarded-for"].startswith("6.6.6.6,")
        assert seen["x-forwarded-for"].split(",")[-1].strip() != "6.6.6.6"
        assert seen["x-envoy-external-address"] == client_ip
        assert seen["x-forwarded-proto"] == proto
        await envoy.stop()


async def test_idle_and_slow_header_clients_do_not_stop_normal_requests(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(replace(TEST_SETTINGS, idle_timeout=1.0, header_timeout=1.0))
    await envoy.apply(table(await upstream("b1", "blue")))
    port = envoy.public_port
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(1000)]
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
    for _, writer in slow:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(10):
            assert await served_by(http, envoy.urls()["public"]) == "b1"
        for _, writer in slow:  # a trickle of header bytes does not keep them alive
            writer.write(b"X-A: b\r\n")
        # Envoy closes both kinds by itself (the bound only stops a hang).
        async with asyncio.timeout(20):
            ends = await asyncio.gather(*(r.read() for r, _ in idle + slow))
        assert all(b"200 OK" not in end for end in ends)
        assert sum(1 for end in ends[1000:] if end.startswith(b"HTTP/1.1 408")) == 100
    finally:
        for _, writer in idle + slow:
            writer.close()
    assert await served_by(http, envoy.urls()["public"]) == "b1"


async def test_connections_over_the_limit_are_refused(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(replace(TEST_SETTINGS, max_connections=50))
    await envoy.apply(table(await upstream("b1", "blue")))
    conns = [await asyncio.open_connection("127.0.0.1", envoy.public_port) for _ in range(60)]
    try:
        async with asyncio.timeout(20):
            closed = 0
            for reader, _ in conns:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        if await reader.read() == b"":
                            closed += 1
        assert closed >= 10
    finally:
        for _, writer in conns:
            writer.close()


async def test_request_timeout_gives_504_but_websockets_are_exempt(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(replace(TEST_SETTINGS, request_timeout=1.0, per_try_timeout=1.0))
    await envoy.apply(table(await upstream("b1", "blue")))
    async with http.get(envoy.urls()["public"] + "/slow?s=3") as r:
        assert r.status == 504
    async with http.ws_connect(envoy.urls()["public"] + "/ws") as ws:
        assert await ws.receive_str() == "hello from b1"
        await asyncio.sleep(1.5)
        await ws.send_str("still here")
        assert await ws.receive_str() == "b1:still here"


async def test_a_100_mb_compressible_websocket_message_is_refused_with_envoy_memory_bounded(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    b1 = await upstream("b1", "blue")
    await envoy.apply(table(b1))
    assert envoy.pid is not None
    before = process.rss_bytes(envoy.pid)
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.rss_bytes(envoy.pid or 0))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        async with http.ws_connect(envoy.urls()["public"] + "/ws", compress=15) as ws:
            assert await ws.receive_str() == "hello from b1"
            await ws.send_bytes(bytes(100 * 1000 * 1000))  # ~100 KB on the wire, deflated
            msg = await ws.receive(timeout=30)
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
            assert ws.close_code == 1009  # message too big, said by the app through Envoy
    finally:
        done.set()
        await sampler
    assert len(b1.ws_close_codes) == 1  # the app ended the socket
    assert peak - before < 64 * MiB, f"envoy grew from {before} to {peak} bytes"
    assert process.alive(envoy.pid)  # and Envoy is still there
