"""The router over real sockets on 127.0.0.1, with small aiohttp upstreams started here."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from yarl import URL

from bluegreen.dataplane.table import Colour
from bluegreen.router import Backend, Router, RoutingTable

MiB = 1024 * 1024


@dataclass
class Upstream:
    """A tiny app instance that reports who it is and what it received."""

    name: str
    colour: Colour
    port: int = 0
    runner: web.AppRunner | None = None
    arrivals: list[str] = field(default_factory=list)
    ws_close_codes: list[int | None] = field(default_factory=list)

    def backend(self, healthy: bool = True) -> Backend:
        return Backend(self.name, self.colour, "127.0.0.1", self.port, healthy)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/order/{n}", self.order)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/download", self.download)
        app.router.add_get("/hop", self.hop)
        app.router.add_get("/ws", self.ws)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "served_by": self.name,
                "method": request.method,
                "path_qs": request.raw_path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode(),
            }
        )

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["delay"]))
        return web.Response(text=self.name)

    async def order(self, request: web.Request) -> web.Response:
        self.arrivals.append(request.match_info["n"])
        return web.Response(text=self.name)

    async def upload(self, request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_chunked(MiB):
            total += len(chunk)
        return web.json_response({"received": total, "served_by": self.name})

    async def download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["mib"]) * MiB
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        block = b"x" * MiB
        for _ in range(size // MiB if request.method != "HEAD" else 0):
            await resp.write(block)
        await resp.write_eof()
        return resp

    async def hop(self, request: web.Request) -> web.Response:
        resp = web.Response(text="hop")
        resp.headers["Keep-Alive"] = "timeout=99"
        resp.headers["Proxy-Authenticate"] = "Basic"
        resp.headers["Trailer"] = "X-Checksum"
        resp.headers["Connection"] = "X-Private"
        resp.headers["X-Private"] = "secret"
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        return resp

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        await ws.send_str(f"hello from {self.name}")
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "close-me":
                    await ws.close(code=4001, message=b"bye")
                else:
                    await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        self.ws_close_codes.append(ws.close_code)
        return ws


async def start_upstream(name: str, colour: Colour) -> Upstream:
    up = Upstream(name, colour)
    up.runner = web.AppRunner(up.app(), access_log=None, shutdown_timeout=1.0)
    await up.runner.setup()
    site = web.TCPSite(up.runner, "127.0.0.1", 0)
    await site.start()
    addr = up.runner.addresses[0]
    up.port = int(addr[1])
    return up


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Env:
    router: Router
    blue: Upstream
    blue2: Upstream
    green: Upstream
    client: aiohttp.ClientSession
    errors: list[Backend]

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.router.public_port}"

    @property
    def preview(self) -> str:
        return f"http://127.0.0.1:{self.router.preview_port}"

    def table(self, **kw: Any) -> RoutingTable:
        base = RoutingTable(
            live="blue",
            preview="green",
            backends=(self.blue.backend(), self.blue2.backend(), self.green.backend()),
        )
        return RoutingTable(
            live=kw.get("live", base.live),
            preview=kw.get("preview", base.preview),
            backends=kw.get("backends", base.backends),
            mode=kw.get("mode", base.mode),
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    ups = [
        await start_upstream("blue-1", "blue"),
        await start_upstream("blue-2", "blue"),
        await start_upstream("green-1", "green"),
    ]
    errors: list[Backend] = []
    router = Router(
        public=("127.0.0.1", 0),
        preview=("127.0.0.1", 0),
        connect_timeout=1.0,
        on_backend_error=errors.append,
        shutdown_timeout=1.0,
    )
    await router.start()
    client = aiohttp.ClientSession(auto_decompress=False)
    e = Env(router, ups[0], ups[1], ups[2], client, errors)
    router.swap(e.table())
    try:
        yield e
    finally:
        await client.close()
        await router.stop()
        for up in ups:
            assert up.runner is not None
            await up.runner.cleanup()


async def get_json(client: aiohttp.ClientSession, url: str, **kw: Any) -> dict[str, Any]:
    async with client.get(url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


# -- plain forwarding -------------------------------------------------------------------


async def test_get_and_post_forwarded_with_body(env: Env) -> None:
    url = URL(env.public + "/echo?x=1&y=%2F", encoded=True)  # raw bytes pass untouched
    async with env.client.post(url, data=b"hello body") as resp:
        assert resp.status == 200
        data = await resp.json()
        assert resp.headers["X-Served-By"] == data["served_by"]
    assert data["method"] == "POST"
    assert data["path_qs"] == "/echo?x=1&y=%2F"
    assert data["body"] == "hello body"
    assert data["served_by"].startswith("blue-")

    data = await get_json(env.client, env.public + "/echo")
    assert data["method"] == "GET"
    assert data["body"] == ""


async def test_chunked_request_body_is_forwarded(env: Env) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for part in (b"a" * 10, b"b" * 20, b"c" * 30):
            yield part

    async with env.client.post(env.public + "/echo", data=gen()) as resp:
        data = await resp.json()
    assert data["body"] == "a" * 10 + "b" * 20 + "c" * 30
    assert "transfer-encoding" in data["headers"]  # re-chunked by the router's own hop


async def test_forwarded_headers(env: Env) -> None:
    headers = {
        "X-Forwarded-For": "10.0.0.1",
        "X-Request-Id": "req-abc-123",
        "X-Forwarded-Proto": "https",  # a client's claim, overwritten by the edge
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "1",
        "Keep-Alive": "timeout=5",
        "Authorization": "Bearer t",
        "Cookie": "session=s1",
    }
    async with env.client.get(env.public + "/echo", headers=headers) as resp:
        assert resp.headers["X-Request-Id"] == "req-abc-123"
        data = await resp.json()
    seen = data["headers"]
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{env.router.public_port}"
    assert seen["host"] == f"127.0.0.1:{env.router.public_port}"  # Host kept
    assert seen["x-request-id"] == "req-abc-123"
    assert seen["authorization"] == "Bearer t"
    assert seen["cookie"] == "session=s1"
    for hop in ("proxy-authorization", "te", "x-drop-me", "keep-alive"):
        assert hop not in seen, hop
    assert "user-agent" in seen  # client's own header passes; router adds none
    assert seen["user-agent"].startswith("Python/")


async def test_request_id_generated_when_missing(env: Env) -> None:
    async with env.client.get(env.public + "/echo") as resp:
        rid = resp.headers["X-Request-Id"]
        data = await resp.json()
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert data["headers"]["x-request-id"] == rid
    assert data["headers"]["x-forwarded-for"] == "127.0.0.1"


async def test_response_hop_by_hop_stripped_and_repeats_kept(env: Env) -> None:
    async with env.client.get(env.public + "/hop") as resp:
        assert await resp.text() == "hop"
        for hop in ("Keep-Alive", "Proxy-Authenticate", "Trailer", "X-Private"):
            assert hop not in resp.headers, hop
        assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert resp.headers["X-Served-By"].startswith("blue-")


async def test_head_keeps_content_length(env: Env) -> None:
    async with env.client.head(env.public + "/download?mib=3") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(3 * MiB)
        assert await resp.read() == b""
    async with env.client.head(env.public + "/echo") as resp:  # small body: fast path
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) > 0
        assert await resp.read() == b""
    assert (await get_json(env.client, env.public + "/echo"))["method"] == "GET"  # conn ok


async def test_load_spreads_over_instances(env: Env) -> None:
    served = [(await get_json(env.client, env.public + "/echo"))["served_by"] for _ in range(6)]
    assert sorted(served) == ["blue-1"] * 3 + ["blue-2"] * 3


# -- switching ------------------------------------------------------------------------


async def test_keepalive_client_follows_swap(env: Env) -> None:
    created: list[object] = []

    async def on_create(*_: object) -> None:
        created.append(object())

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]
    ) as client:
        first = await get_json(client, env.public + "/echo")
        assert first["served_by"].startswith("blue-")
        env.router.swap(env.router.table.with_live("green"))
        second = await get_json(client, env.public + "/echo")
        assert second["served_by"] == "green-1"
    assert len(created) == 1  # both requests used one keep-alive connection


async def test_preview_listener_goes_to_preview_colour(env: Env) -> None:
    assert (await get_json(env.client, env.preview + "/echo"))["served_by"] == "green-1"
    assert (await get_json(env.client, env.public + "/echo"))["served_by"].startswith("blue")
    env.router.swap(env.router.table.with_preview(None))  # falls back to live
    assert (await get_json(env.client, env.preview + "/echo"))["served_by"].startswith("blue")


async def test_no_healthy_backend_is_503(env: Env) -> None:
    env.router.swap(env.table(backends=(env.blue.backend(False), env.green.backend())))
    async with env.client.get(env.public + "/echo") as resp:
        assert resp.status == 503
        body = await resp.json()
        assert body["error"] == "no_healthy_backend"
        assert "blue" in body["detail"]
        assert "Retry-After" in resp.headers
    assert env.router.metrics.snapshot("blue").count("error") == 1
    env.router.swap(RoutingTable(live=None, preview=None))
    async with env.client.get(env.public + "/echo") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "nothing_live"


async def test_maintenance_page_on_public_only(env: Env) -> None:
    env.router.swap(env.table(mode="maintenance"))
    async with env.client.get(env.public + "/echo") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert resp.content_type == "text/html"
        assert "maintenance" in (await resp.text()).lower()
    assert (await get_json(env.client, env.preview + "/echo"))["served_by"] == "green-1"


# -- retries --------------------------------------------------------------------------


async def test_connection_refused_retried_on_other_backend(env: Env) -> None:
    dead = Backend("blue-dead", "blue", "127.0.0.1", free_port())
    env.router.swap(env.table(backends=(dead, env.blue.backend())))
    for _ in range(4):
        assert (await get_json(env.client, env.public + "/echo"))["served_by"] == "blue-1"
    # A POST with a body is retried too: the connect failed before anything was sent.
    for _ in range(2):
        async with env.client.post(env.public + "/echo", data=b"payload") as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == "payload"
    assert dead in env.errors
    assert env.router.metrics.retries >= 1


async def test_all_backends_refused_is_502(env: Env) -> None:
    dead = Backend("blue-dead", "blue", "127.0.0.1", free_port())
    env.router.swap(env.table(backends=(dead,)))
    async with env.client.get(env.public + "/echo") as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["error"] == "bad_gateway"
    assert "blue-dead" in body["detail"]
    assert "Traceback" not in body["detail"]
    assert env.errors == [dead]


@pytest.fixture
async def resetting_port() -> AsyncIterator[int]:
    """A server that accepts, reads the request head, then drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_reset_before_response_retry_rules(env: Env, resetting_port: int) -> None:
    broken = Backend("blue-reset", "blue", "127.0.0.1", resetting_port)
    env.router.swap(env.table(backends=(broken, env.blue.backend())))

    # Ties alternate, so over 4 requests the broken backend is picked first twice.
    for _ in range(4):
        assert (await get_json(env.client, env.public + "/echo"))["served_by"] == "blue-1"
        headers = {"Idempotency-Key": "k1"}
        async with env.client.post(env.public + "/echo", data=b"pay", headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == "pay"

    statuses: list[int] = []
    for _ in range(4):
        async with env.client.post(env.public + "/echo", data=b"pay once") as resp:
            statuses.append(resp.status)
            if resp.status == 502:
                body = await resp.json()
                assert "blue-reset" in body["detail"]
    assert sorted(statuses) == [200, 200, 502, 502]
    assert env.errors == []  # it accepted connections: not a connect failure


# -- pause ----------------------------------------------------------------------------


async def test_paused_requests_wait_and_resume_in_order(env: Env) -> None:
    env.router.swap(env.table(mode="paused"))
    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(env.client.get(env.public + f"/order/{n}")))
        arrived = n + 1
        await wait_for(lambda: env.router.paused_requests == arrived)  # noqa: B023
    await asyncio.sleep(0.1)
    assert not any(t.done() for t in tasks)
    assert env.blue.arrivals == [] and env.green.arrivals == []
    # Resume onto green: held requests read the new table when released.
    env.router.swap(env.table(live="green"))
    responses = await asyncio.gather(*tasks)
    try:
        assert [r.status for r in responses] == [200] * 5
        assert env.green.arrivals == ["0", "1", "2", "3", "4"]
    finally:
        for r in responses:
            r.release()
    assert env.router.paused_requests == 0


async def test_pause_overflow_and_timeout_are_503(env: Env) -> None:
    env.router.max_paused = 2
    env.router.paused_timeout = 0.3
    env.router.swap(env.table(mode="paused"))
    held = [asyncio.create_task(env.client.get(env.public + "/echo")) for _ in range(2)]
    await wait_for(lambda: env.router.paused_requests == 2)
    async with env.client.get(env.public + "/echo") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "paused_overflow"
        assert resp.headers["Retry-After"] == "5"
    started = time.monotonic()
    for r in await asyncio.gather(*held):
        assert r.status == 503
        assert (await r.json())["error"] == "paused_timeout"
        r.release()
    assert time.monotonic() - started < 1.0
    assert env.router.metrics.unrouted == {"paused_overflow": 1, "paused_timeout": 2}


# -- websockets -----------------------------------------------------------------------


async def test_websocket_echo_both_ways(env: Env) -> None:
    async with env.client.ws_connect(
        env.public + "/ws", protocols=("chat",), headers={"Cookie": "s=1"}
    ) as ws:
        assert ws.protocol == "chat"
        served = (await ws.receive_str()).removeprefix("hello from ")
        assert served.startswith("blue-")
        assert env.router.open_websockets("blue") == 1
        assert env.router.in_flight("blue") == 0  # websockets are not HTTP in-flight
        await ws.send_str("ping")
        assert await ws.receive_str() == "echo:ping"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes() == b"\x03\x02\x01"
        await ws.close(code=4000, message=b"client done")
    upstream = env.blue if served == "blue-1" else env.blue2
    await wait_for(lambda: upstream.ws_close_codes == [4000])
    await wait_for(lambda: env.router.open_websockets("blue") == 0)


async def test_websocket_upstream_close_code_propagates(env: Env) -> None:
    async with env.client.ws_connect(env.public + "/ws") as ws:
        await ws.receive_str()
        await ws.send_str("close-me")
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001
        assert msg.extra == "bye"


async def test_websocket_to_refused_backend_is_retried(env: Env) -> None:
    dead = Backend("blue-dead", "blue", "127.0.0.1", free_port())
    env.router.swap(env.table(backends=(dead, env.blue.backend())))
    for _ in range(2):
        async with env.client.ws_connect(env.public + "/ws") as ws:
            assert await ws.receive_str() == "hello from blue-1"


# -- drain ----------------------------------------------------------------------------


async def test_drain_waits_for_slow_request(env: Env) -> None:
    slow = asyncio.create_task(env.client.get(env.public + "/slow?delay=0.4"))
    await wait_for(lambda: env.router.in_flight("blue") == 1)
    env.router.swap(env.router.table.with_live("green"))
    started = time.monotonic()
    await env.router.drain("blue", timeout=5.0)
    elapsed = time.monotonic() - started
    assert slow.done()
    resp = await slow
    assert resp.status == 200
    resp.release()
    assert env.router.in_flight("blue") == 0
    assert 0.2 < elapsed < 2.0


async def test_drain_is_bounded_by_timeout(env: Env) -> None:
    slow = asyncio.create_task(env.client.get(env.public + "/slow?delay=1.0"))
    await wait_for(lambda: env.router.in_flight("blue") == 1)
    started = time.monotonic()
    await env.router.drain("blue", timeout=0.2)
    assert time.monotonic() - started < 0.6
    assert env.router.in_flight("blue") == 1
    resp = await slow  # not cut off: drain only waits
    assert resp.status == 200
    resp.release()


async def test_drain_closes_idle_websocket_with_1001(env: Env) -> None:
    async with env.client.ws_connect(env.public + "/ws") as ws:
        served = (await ws.receive_str()).removeprefix("hello from ")
        started = time.monotonic()
        await env.router.drain("blue", timeout=0.3)
        assert time.monotonic() - started >= 0.3
        msg = await asyncio.wait_for(ws.receive(), 2.0)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1001
    upstream = env.blue if served == "blue-1" else env.blue2
    await wait_for(lambda: upstream.ws_close_codes == [1001])
    assert env.router.open_websockets("blue") == 0


async def test_drain_returns_early_when_websocket_ends(env: Env) -> None:
    async with env.client.ws_connect(env.public + "/ws") as ws:
        await ws.receive_str()
        drain = asyncio.create_task(env.router.drain("blue", timeout=5.0))
        await asyncio.sleep(0.1)
        assert not drain.done()
        await ws.close()
        await asyncio.wait_for(drain, 1.0)


# -- metrics over the wire ------------------------------------------------------------


async def test_metrics_count_forwarded_requests(env: Env) -> None:
    before = env.router.metrics.snapshot("blue")
    for _ in range(3):
        await get_json(env.client, env.public + "/echo")
    async with env.client.get(env.public + "/nope") as resp:
        assert resp.status == 404
    window = env.router.metrics.snapshot("blue") - before
    assert window.requests == 4
    assert (window.count("2xx"), window.count("4xx")) == (3, 1)
    assert window.p95() is not None
    text = env.router.metrics.render_prometheus()
    assert 'bluegreen_router_requests_total{colour="blue",class="2xx"} 3' in text
    assert sum(n for _, n, _ in env.router.metrics.series("blue")) == 4


# -- big bodies -----------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def peak_rss_during(work: Awaitable[Any]) -> tuple[Any, int]:
    """Run ``work`` while sampling RSS; return its result and the peak growth in bytes."""
    base = rss_bytes()
    peak = base
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, rss_bytes())
        await asyncio.sleep(0.01)
    return await task, peak - base


async def test_100mb_upload_streams_with_flat_memory(env: Env) -> None:
    async def body() -> AsyncIterator[bytes]:
        block = b"u" * MiB
        for _ in range(100):
            yield block

    async def upload() -> dict[str, Any]:
        headers = {"Content-Length": str(100 * MiB)}
        async with env.client.post(env.public + "/upload", data=body(), headers=headers) as r:
            assert r.status == 200
            data: dict[str, Any] = await r.json()
            return data

    result, growth = await peak_rss_during(upload())
    assert result["received"] == 100 * MiB
    assert growth < 30 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"


async def test_100mb_download_streams_with_flat_memory(env: Env) -> None:
    async def download() -> int:
        total = 0
        async with env.client.get(env.public + "/download?mib=100") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == str(100 * MiB)
            async for chunk in r.content.iter_chunked(MiB):
                total += len(chunk)
        return total

    total, growth = await peak_rss_during(download())
    assert total == 100 * MiB
    assert growth < 30 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"


async def wait_for(cond: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``cond`` (state of another component, no event to await) until true."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
