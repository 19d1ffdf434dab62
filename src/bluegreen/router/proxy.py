"""The embedded L7 router: an aiohttp reverse proxy in front of the blue and green colours.

Promises:

* every request reads the routing table once when it arrives (a paused request reads
  it again when released, so it goes where the table that ended the pause says);
* bodies stream both ways with bounded memory, except request bodies of at most
  :data:`REPLAY_LIMIT` bytes on retriable requests, which are buffered so they can be
  replayed on another backend;
* router-made failures are short JSON bodies (or an HTML page for maintenance) with a
  ``Retry-After`` where waiting helps, never a stack trace.

Retry rule (see :meth:`Router._forward`): a failure to *connect* (aiohttp raises
``ClientConnectorError``/``ConnectionTimeoutError`` before writing a single byte) is
always retried on another healthy backend of the same colour, whatever the method,
because the request body stream has not been touched. A failure after the request was
written but before any response byte (reset, server disconnected) is retried only if the
request is retriable (idempotent method, an ``Idempotency-Key`` header, or no body) *and*
its body can be replayed (no body, or a buffered small body). Each healthy backend is
tried at most once; when nothing is left the client gets a 502 naming the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bluegreen.dataplane.table import COLOURS, EMPTY_TABLE, Backend, Colour, RoutingTable
from bluegreen.router.balancer import Balancer
from bluegreen.router.metrics import RouterMetrics

log = logging.getLogger(__name__)

#: Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Methods that may be replayed after they were (maybe) seen by a backend.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Largest request body buffered in memory so that a retriable request can be replayed.
REPLAY_LIMIT = 64 * 1024
CHUNK_SIZE = 64 * 1024
#: Upstream keep-alive connections are dropped after this idle time; it is below the
#: 5 s default of uvicorn so we do not reuse a connection the instance is closing.
UPSTREAM_KEEPALIVE = 4.0
WS_CLOSE_TIMEOUT = 5.0
GOING_AWAY = 1001

_MAINTENANCE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Down for maintenance</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
</style></head><body><h1>Down for maintenance</h1>
<p>We are upgrading the service. Please try again in a few minutes.</p></body></html>
"""

BackendErrorCallback = Callable[[Backend], None]


class _Unretriable(Exception):
    """The upstream attempt failed in a way that must not be retried."""


@dataclass(eq=False, slots=True)
class _WsSession:
    """One proxied websocket: the client side, the upstream side and its state."""

    colour: Colour
    backend_id: str
    client: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self, code: int, message: bytes) -> None:
        """Close both sides with ``code``; bounded by the websocket close timeouts."""
        await asyncio.gather(
            self.client.close(code=code, message=message),
            self.upstream.close(code=code, message=message),
            return_exceptions=True,
        )


@dataclass(slots=True)
class _Body:
    """Tracks whether a streamed request body has been (partly) consumed."""

    request: web.BaseRequest
    consumed: bool = False

    async def stream(self) -> AsyncIterator[bytes]:
        async for chunk in self.request.content.iter_chunked(CHUNK_SIZE):
            self.consumed = True
            yield chunk


class Router:
    """Reverse proxy with a public listener (live colour) and an optional preview listener.

    ``on_backend_error`` is called with a backend whenever connecting to it fails, so a
    supervisor can take it out of rotation at once; the router itself never changes the
    table.
    """

    def __init__(
        self,
        *,
        public: tuple[str, int],
        preview: tuple[str, int] | None,
        max_paused: int = 1000,
        paused_timeout: float = 30.0,
        connect_timeout: float = 2.0,
        on_backend_error: BackendErrorCallback | None = None,
        retry_after: int = 5,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._public_addr = public
        self._preview_addr = preview
        self.max_paused = max_paused
        self.paused_timeout = paused_timeout
        self.connect_timeout = connect_timeout
        self.on_backend_error = on_backend_error
        self.retry_after = retry_after
        self.shutdown_timeout = shutdown_timeout
        self.metrics = RouterMetrics()
        self._table: RoutingTable = EMPTY_TABLE
        self._balancer = Balancer()
        self._paused: deque[asyncio.Future[None]] = deque()
        self._in_flight: dict[Colour, int] = dict.fromkeys(COLOURS, 0)
        self._idle: dict[Colour, asyncio.Event] = {c: asyncio.Event() for c in COLOURS}
        for event in self._idle.values():
            event.set()
        self._websockets: dict[Colour, set[_WsSession]] = {c: set() for c in COLOURS}
        self._runners: list[web.ServerRunner] = []
        self._ports: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- table ------------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        """The routing table in force."""
        return self._table

    def swap(self, table: RoutingTable) -> None:
        """Install ``table`` atomically; if it is not paused, release held requests in
        arrival order. Must be called from the router's event loop thread."""
        self._table = table
        if table.mode != "paused":
            while self._paused:
                waiter = self._paused.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def in_flight(self, colour: Colour) -> int:
        """HTTP requests of ``colour`` being forwarded now (websockets not included)."""
        return self._in_flight[colour]

    def open_websockets(self, colour: Colour) -> int:
        """Proxied websockets of ``colour`` open now."""
        return len(self._websockets[colour])

    @property
    def paused_requests(self) -> int:
        """Requests currently held by a pause."""
        return sum(1 for w in self._paused if not w.done())

    # -- lifecycle --------------------------------------------------------------------

    @property
    def public_port(self) -> int:
        """Port the public listener is bound to (valid after :meth:`start`)."""
        return self._ports["public"]

    @property
    def preview_port(self) -> int | None:
        """Port the preview listener is bound to, or ``None`` without one."""
        return self._ports.get("preview")

    async def start(self) -> None:
        """Open the upstream connection pool and bind the listeners."""
        if self._session is not None:
            raise RuntimeError("router already started")
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, keepalive_timeout=UPSTREAM_KEEPALIVE, ttl_dns_cache=10
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # Never keep upstream cookies: the session is shared by all clients.
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self.connect_timeout, sock_read=None
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            max_line_size=16384,
            max_field_size=16384,
        )
        try:
            listeners: list[tuple[str, tuple[str, int], bool]] = [
                ("public", self._public_addr, False)
            ]
            if self._preview_addr is not None:
                listeners.append(("preview", self._preview_addr, True))
            for name, (host, port), is_preview in listeners:
                handler = self._handle_preview if is_preview else self._handle_public
                server = web.Server(handler, access_log=None)
                runner = web.ServerRunner(server, shutdown_timeout=self.shutdown_timeout)
                await runner.setup()
                self._runners.append(runner)
                site = web.TCPSite(runner, host, port, reuse_address=True)
                await site.start()
                self._ports[name] = _bound_port(runner)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close websockets (1001), the listeners and the upstream pool."""
        sessions = [s for c in COLOURS for s in self._websockets[c]]
        if sessions:
            await asyncio.gather(*(s.close(GOING_AWAY, b"router stopping") for s in sessions))
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        self._ports.clear()
        for waiter in self._paused:
            if not waiter.done():
                waiter.cancel()
        self._paused.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # The controller's interface takes a timeout; the deadline also decides the 1001 closes.
    async def drain(self, colour: Colour, timeout: float) -> None:  # noqa: ASYNC109
        """Wait up to ``timeout`` s for ``colour``'s in-flight HTTP requests to reach 0
        and its websockets to end; then close the websockets still open with 1001 on both
        sides. Returns early when everything has finished."""
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._wait_idle(colour))]
        waits += [asyncio.create_task(s.finished.wait()) for s in self._websockets[colour]]
        try:
            await asyncio.wait(waits, timeout=timeout)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if self._in_flight[colour]:
            log.warning(
                "drain(%s): %d requests still in flight after %.1fs",
                colour,
                self._in_flight[colour],
                timeout,
            )
        left = list(self._websockets[colour])
        if left:
            log.info("drain(%s): closing %d websockets with 1001", colour, len(left))
            await asyncio.gather(*(s.close(GOING_AWAY, b"going away") for s in left))
            await asyncio.gather(*(s.finished.wait() for s in left))

    async def _wait_idle(self, colour: Colour) -> None:
        while self._in_flight[colour] > 0:
            self._idle[colour].clear()
            await self._idle[colour].wait()

    # -- request handling -------------------------------------------------------------

    async def _handle_public(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._handle(request, preview=False)

    async def _handle_preview(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._handle(request, preview=True)

    async def _handle(self, request: web.BaseRequest, *, preview: bool) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        request_id = _request_id(request.headers)
        table = self._table
        if table.mode == "paused":
            reason = await self._hold()
            if reason is not None:
                self.metrics.observe_unrouted(reason)
                return self._error(503, reason, "requests are paused, retry shortly", request_id)
            table = self._table
        colour = table.preview_colour() if preview else table.live
        if colour is None:
            self.metrics.observe_unrouted("nothing_live")
            return self._error(503, "nothing_live", "no version is deployed", request_id)
        if table.mode == "maintenance" and not preview:
            self.metrics.observe_unrouted("maintenance")
            return self._maintenance(request_id)

        self._enter(colour)
        entered = True

        def leave() -> None:
            nonlocal entered
            if entered:
                entered = False
                self._leave(colour)

        try:
            if _is_websocket(request):
                return await self._websocket(request, table, colour, request_id, started, leave)
            return await self._forward(request, table, colour, request_id, started)
        finally:
            leave()

    async def _hold(self) -> str | None:
        """Wait for the pause to end; ``None`` when released, else the 503 reason."""
        if self.paused_requests >= self.max_paused:
            return "paused_overflow"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._paused.append(waiter)
        try:
            async with asyncio.timeout(self.paused_timeout):
                await waiter
        except TimeoutError:
            return "paused_timeout"
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._paused.remove(waiter)
        return None

    def _enter(self, colour: Colour) -> None:
        self._in_flight[colour] += 1
        self._idle[colour].clear()
        self.metrics.request_started(colour)

    def _leave(self, colour: Colour) -> None:
        self._in_flight[colour] -= 1
        self.metrics.request_finished(colour)
        if self._in_flight[colour] <= 0:
            self._idle[colour].set()

    async def _forward(
        self,
        request: web.BaseRequest,
        table: RoutingTable,
        colour: Colour,
        request_id: str,
        started: float,
    ) -> web.StreamResponse:
        """Forward a plain HTTP request, retrying per the module's retry rule."""
        loop = asyncio.get_running_loop()
        candidates = table.healthy(colour)
        if not candidates:
            self.metrics.observe(colour, None, 503, loop.time() - started, router_error=True)
            return self._error(
                503, "no_healthy_backend", f"no healthy {colour} instance", request_id
            )
        session = self._session
        assert session is not None, "router not started"

        headers = _upstream_headers(request, request_id)
        method = request.method
        has_body = request.body_exists
        retriable = (
            method in IDEMPOTENT_METHODS or "Idempotency-Key" in request.headers or not has_body
        )
        if has_body and request.headers.get("Expect", "").lower() == "100-continue":
            # The low-level server does not answer Expect itself; we want the body.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        buffered: bytes | None = None
        if has_body and retriable and 0 < (request.content_length or 0) <= REPLAY_LIMIT:
            buffered = await request.content.read()
        replayable = not has_body or buffered is not None

        tried: set[str] = set()
        failure = "no backend could be reached"
        while (backend := self._balancer.pick(candidates, tried)) is not None:
            tried.add(backend.id)
            body = _Body(request) if has_body and buffered is None else None
            data: Any = buffered if buffered is not None else body.stream() if body else None
            url = URL(backend.origin + request.raw_path, encoded=True)
            self._balancer.acquire(backend.id)
            self.metrics.request_started(colour, backend.id)
            try:
                try:
                    resp = await session.request(
                        method, url, headers=headers, data=data, allow_redirects=False
                    )
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    # Nothing was written: safe to retry any request.
                    failure = f"cannot connect to {backend.id}: {_describe(exc)}"
                    self._backend_failed(colour, backend)
                    self._note_retry(tried, candidates)
                    continue
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
                    failure = f"{backend.id} failed before responding: {_describe(exc)}"
                    if retriable and replayable and not (body and body.consumed):
                        self._note_retry(tried, candidates)
                        continue
                    break
                except aiohttp.ClientError as exc:
                    failure = f"{backend.id}: {_describe(exc)}"
                    break
                return await self._relay(request, resp, colour, backend, request_id, started)
            finally:
                self._balancer.release(backend.id)
                self.metrics.request_finished(colour, backend.id)

        self.metrics.observe(colour, None, 502, loop.time() - started, router_error=True)
        return self._error(502, "bad_gateway", failure, request_id)

    def _note_retry(self, tried: set[str], candidates: tuple[Backend, ...]) -> None:
        if any(b.id not in tried for b in candidates):
            self.metrics.retries += 1

    def _backend_failed(self, colour: Colour, backend: Backend) -> None:
        self.metrics.connect_error(colour, backend.id)
        if self.on_backend_error is not None:
            try:
                self.on_backend_error(backend)
            except Exception:
                log.exception("on_backend_error callback failed for %s", backend.id)

    async def _relay(
        self,
        request: web.BaseRequest,
        resp: aiohttp.ClientResponse,
        colour: Colour,
        backend: Backend,
        request_id: str,
        started: float,
    ) -> web.StreamResponse:
        """Stream the upstream response to the client."""
        out = web.StreamResponse(
            status=resp.status, reason=resp.reason, headers=_downstream_headers(resp.headers)
        )
        out.headers["X-Request-Id"] = request_id
        out.headers["X-Served-By"] = backend.id
        complete = False
        try:
            length = resp.content_length
            bodiless = request.method == "HEAD" or resp.status in (204, 304)
            if length is not None and length <= CHUNK_SIZE and not bodiless:
                # Small body of known size: one bounded read lets headers, body and end
                # go out in a single write instead of three.
                body = await resp.content.readexactly(length) if length else b""
                await out.prepare(request)
                await out.write_eof(body)
            else:
                await out.prepare(request)
                async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
                    await out.write(chunk)
                await out.write_eof()
            complete = True
        except (
            aiohttp.ClientError,
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
        ) as exc:
            # Headers are gone already: the only honest signal left is to cut the client
            # connection so it sees a truncated body instead of a clean end.
            log.info("aborting %s %s via %s: %s", request.method, request.path, backend.id, exc)
            if request.transport is not None:
                request.transport.close()
        finally:
            if complete:
                resp.release()
            else:
                resp.close()
            self.metrics.observe(
                colour, backend.id, resp.status, asyncio.get_running_loop().time() - started
            )
        return out

    # -- websockets -------------------------------------------------------------------

    async def _websocket(
        self,
        request: web.BaseRequest,
        table: RoutingTable,
        colour: Colour,
        request_id: str,
        started: float,
        handshake_done: Callable[[], None],
    ) -> web.StreamResponse:
        """Open a websocket to a backend, accept the client's, and pump messages."""
        loop = asyncio.get_running_loop()
        candidates = table.healthy(colour)
        if not candidates:
            self.metrics.observe(colour, None, 503, loop.time() - started, router_error=True)
            return self._error(
                503, "no_healthy_backend", f"no healthy {colour} instance", request_id
            )
        session = self._session
        assert session is not None, "router not started"
        headers = _upstream_headers(request, request_id)
        for name in list(headers):
            if name.lower().startswith("sec-websocket-"):
                del headers[name]
        protocols = [
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for p in value.split(",")
            if p.strip()
        ]
        tried: set[str] = set()
        failure = "no backend could be reached"
        upstream: aiohttp.ClientWebSocketResponse | None = None
        backend: Backend | None = None
        while (candidate := self._balancer.pick(candidates, tried)) is not None:
            tried.add(candidate.id)
            url = URL(candidate.origin + request.raw_path, encoded=True)
            try:
                upstream = await session.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    autoping=True,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=WS_CLOSE_TIMEOUT),
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                failure = f"cannot connect to {candidate.id}: {_describe(exc)}"
                self._backend_failed(colour, candidate)
                self._note_retry(tried, candidates)
                continue
            except aiohttp.WSServerHandshakeError as exc:
                # The instance answered but refused the upgrade: pass its status on.
                status = exc.status if exc.status >= 400 else 502
                self.metrics.observe(colour, candidate.id, status, loop.time() - started)
                return self._error(
                    status, "upgrade_refused", f"{candidate.id}: {exc.message}", request_id
                )
            except aiohttp.ClientError as exc:
                failure = f"{candidate.id}: {_describe(exc)}"
                break
            backend = candidate
            break
        if upstream is None or backend is None:
            self.metrics.observe(colour, None, 502, loop.time() - started, router_error=True)
            return self._error(502, "bad_gateway", failure, request_id)

        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=True,
            max_msg_size=0,
            timeout=WS_CLOSE_TIMEOUT,
        )
        client.headers["X-Request-Id"] = request_id
        client.headers["X-Served-By"] = backend.id
        ws = _WsSession(colour, backend.id, client, upstream)
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        self.metrics.observe(colour, backend.id, 101, loop.time() - started)
        self._websockets[colour].add(ws)
        self.metrics.websocket_opened(colour, backend.id)
        handshake_done()
        try:
            await self._pump_both(ws)
        finally:
            self._websockets[colour].discard(ws)
            self.metrics.websocket_closed(colour, backend.id)
            ws.finished.set()
        return client

    async def _pump_both(self, ws: _WsSession) -> None:
        to_upstream = asyncio.create_task(_pump(ws.client, ws.upstream))
        to_client = asyncio.create_task(_pump(ws.upstream, ws.client))
        try:
            done, _ = await asyncio.wait(
                {to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED
            )
            first = to_upstream if to_upstream in done else to_client
            code, message = 1011, b""
            if not first.cancelled() and first.exception() is None:
                result = first.result()
                if result is not None:
                    code, message = result
            # One side ended: end the other with the same code (no-op if already closed).
            await ws.close(code, message)
            await asyncio.wait({to_upstream, to_client}, timeout=WS_CLOSE_TIMEOUT)
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
            await asyncio.gather(to_upstream, to_client, return_exceptions=True)

    # -- router-made responses --------------------------------------------------------

    def _error(self, status: int, error: str, detail: str, request_id: str) -> web.Response:
        body = json.dumps({"error": error, "detail": detail, "request_id": request_id})
        resp = web.Response(status=status, text=body, content_type="application/json")
        resp.headers["X-Request-Id"] = request_id
        resp.headers["Cache-Control"] = "no-store"
        if status == 503:
            resp.headers["Retry-After"] = str(self.retry_after)
        return resp

    def _maintenance(self, request_id: str) -> web.Response:
        resp = web.Response(status=503, text=_MAINTENANCE_PAGE, content_type="text/html")
        resp.headers["Retry-After"] = str(self.retry_after)
        resp.headers["X-Request-Id"] = request_id
        resp.headers["Cache-Control"] = "no-store"
        return resp


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int, bytes] | None:
    """Copy messages from ``src`` to ``dst`` until ``src`` ends.

    Returns the close code and reason ``src`` sent, or ``None`` if ``src`` was closed by
    us (or vanished). Pings and pongs are answered by aiohttp on each hop.
    """
    while True:
        msg = await src.receive()
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            return _sendable_code(msg.data), (msg.extra or "").encode()
        elif msg.type is WSMsgType.ERROR:
            return 1011, b""
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            code = src.close_code
            return None if code is None else (_sendable_code(code), b"")


def _sendable_code(code: int | None) -> int:
    """Close codes 1005/1006/1015 are reserved for reporting and cannot be sent."""
    if code is None or code == 1005:
        return 1000
    if code in (1006, 1015):
        return 1011
    return code


def _bound_port(runner: web.ServerRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise RuntimeError("listener has no TCP address")


def _request_id(headers: CIMultiDictProxy[str]) -> str:
    """The client's X-Request-Id if it is sane (short, printable ASCII), else a new one."""
    rid = headers.get("X-Request-Id", "")
    if 0 < len(rid) <= 128 and rid.isascii() and rid.isprintable():
        return rid
    return uuid.uuid4().hex


def _is_websocket(request: web.BaseRequest) -> bool:
    if request.method != "GET" or request.headers.get("Upgrade", "").lower() != "websocket":
        return False
    return "upgrade" in request.headers.get("Connection", "").lower()


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    return {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }


def _upstream_headers(request: web.BaseRequest, request_id: str) -> CIMultiDict[str]:
    """Client headers minus hop-by-hop ones, plus X-Forwarded-* and X-Request-Id."""
    drop = HOP_BY_HOP | _connection_tokens(request.headers) | {"expect"}
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in drop
    )
    remote = request.remote or ""
    previous = ", ".join(request.headers.getall("X-Forwarded-For", []))
    headers["X-Forwarded-For"] = f"{previous}, {remote}" if previous else remote
    # We are the edge: what the client claims about proto/host is not trusted.
    headers["X-Forwarded-Proto"] = request.scheme
    if request.host:
        headers["X-Forwarded-Host"] = request.host
    headers["X-Request-Id"] = request_id
    return headers


def _downstream_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop ones (repeated ones like Set-Cookie kept)."""
    drop = HOP_BY_HOP | _connection_tokens(upstream)
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in drop)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
