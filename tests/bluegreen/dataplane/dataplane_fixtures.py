"""Real Envoy in front of small real aiohttp upstreams, all on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.envoy_admin import EnvoyAdmin
from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings
from bluegreen.dataplane.table import Backend, Colour, RoutingTable

APP_PATHS = AppPaths()
#: Fast health checks so tests see Envoy notice a change within a second or two.
TEST_SETTINGS = DataPlaneSettings(
    health_interval=0.2, health_timeout=0.5, retry_after=3, drain_time=2.0
).with_ports()


@dataclass
class Upstream:
    """A tiny app instance that says who it is and what it received."""

    name: str
    colour: Colour
    port: int = 0
    ready: bool = True
    ws_max_message: int = 1024 * 1024
    fail_next: int = 0  # the next N /flaky requests get their connection reset
    slow_next: int = 0  # the next N /flaky requests take 5 s
    runner: web.AppRunner | None = None
    arrivals: list[str] = field(default_factory=list)
    #: (method, path, Host) of every request but health checks, in arrival order.
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    ws_close_codes: list[int | None] = field(default_factory=list)

    def backend(self, healthy: bool = True) -> Backend:
        return Backend(self.name, self.colour, "127.0.0.1", self.port, healthy)

    @web.middleware
    async def record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != APP_PATHS.ready_path:
            self.seen.append((request.method, request.path, request.headers.get("Host", "")))
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3, middlewares=[self.record])
        app.router.add_get(APP_PATHS.ready_path, self.readyz)
        app.router.add_get(APP_PATHS.version_path, self.version)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/ws", self.ws)
        app.router.add_route("*", "/flaky", self.flaky)
        return app

    async def readyz(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503, text="ready" if self.ready else "no")

    async def version(self, request: web.Request) -> web.Response:
        self.arrivals.append(request.path)
        return web.json_response({"colour": self.colour, "instance": self.name})

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrivals.append(request.path)
        return web.json_response(
            {
                "served_by": self.name,
                "method": request.method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_len": len(body),
            }
        )

    async def flaky(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrivals.append(request.path)
        if self.fail_next > 0:
            self.fail_next -= 1
            assert request.transport is not None
            request.transport.abort()  # a reset after the request arrived
            await asyncio.sleep(1)
        elif self.slow_next > 0:
            self.slow_next -= 1
            await asyncio.sleep(5)
        return web.Response(text=self.name)

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=self.name)

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.ws_max_message, compress=True)
        await ws.prepare(request)
        await ws.send_str(f"hello from {self.name}")
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(f"{self.name}:{msg.data}")
            elif msg.type is WSMsgType.BINARY:
                await ws.send_str(f"{self.name}:binary:{len(msg.data)}")
            elif msg.type is WSMsgType.ERROR:
                break
        self.ws_close_codes.append(ws.close_code)
        return ws

    async def start(self) -> None:
        # auto_decompress off: the test must see the bytes Envoy forwarded, as they were.
        self.runner = web.AppRunner(self.app(), auto_decompress=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


StartUpstream = Callable[[str, Colour], Awaitable[Upstream]]


@pytest.fixture
async def upstream() -> AsyncIterator[StartUpstream]:
    """``await upstream("b1", "blue")`` starts one; all are stopped at the end."""
    started: list[Upstream] = []

    async def start(name: str, colour: Colour) -> Upstream:
        up = Upstream(name, colour)
        await up.start()
        started.append(up)
        return up

    yield start
    for up in started:
        await up.stop()


StartEnvoy = Callable[..., Awaitable[Envoy]]


@pytest.fixture
async def envoy_factory(tmp_path: Path) -> AsyncIterator[StartEnvoy]:
    """``await envoy_factory(settings=...)`` starts an Envoy under ``tmp_path``; every
    Envoy started is stopped at the end (no process is left behind)."""
    started: list[Envoy] = []

    async def start(
        settings: DataPlaneSettings = TEST_SETTINGS, state_dir: Path | None = None
    ) -> Envoy:
        envoy = Envoy(settings, state_dir=state_dir or tmp_path / "state", app_paths=APP_PATHS)
        await envoy.start()
        started.append(envoy)
        return envoy

    yield start
    for envoy in reversed(started):
        await envoy.stop()


@pytest.fixture
async def envoy(envoy_factory: StartEnvoy) -> Envoy:
    return await envoy_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def table(
    *ups: Upstream, live: Colour | None = "blue", preview: Colour | None = None
) -> RoutingTable:
    return RoutingTable(live=live, preview=preview, backends=tuple(u.backend() for u in ups))


async def served_by(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/echo") as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        return str(data["served_by"])


@dataclass
class Load:
    """Concurrent clients sending GETs in a loop; counts answers by status."""

    url: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            try:
                async with session.get(self.url + "/echo") as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        self.ok += 1
                        who = str(json.loads(body)["served_by"])
                        self.served[who] = self.served.get(who, 0) + 1
                    else:
                        self.failed.append(f"{resp.status} {body[:200]!r}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failed.append(repr(exc))

    @contextlib.asynccontextmanager
    async def running(self, clients: int = 8) -> AsyncIterator[Load]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            self._tasks = [asyncio.create_task(self._client(session)) for _ in range(clients)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*self._tasks)


async def healthy(envoy: Envoy, colour: str) -> int:
    """Instances of ``colour`` that pass Envoy's health check, as its admin reports."""
    async with EnvoyAdmin(envoy.admin_address) as admin:
        return (await admin.healthy_hosts()).get(colour, 0)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``check`` until it holds; the bound only stops a hang, it is not a speed."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)
