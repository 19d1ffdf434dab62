"""A Python client of the signalling websocket, as a participant sees it: it fetches a join
ticket over HTTP, opens the websocket, and when the socket drops (an instance stopping during a
deploy, a network blip) reconnects with exponential backoff and jitter, fetching a fresh ticket
each time, to the same base URL first (a router) and then the next one given (plain instances).
The visit resumes from the database: presence, admission and the end are not per-instance.

It carries no media; tests and the benchmark put an aiortc peer (or nothing) on top::

    async with SignallingClient(base_urls=[url], appointment_id=7, headers=auth) as client:
        await client.wait_state(lambda s: s["admitted"])
        await client.signal({"description": {...}})
        message = await client.next_signal()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from clinic.visits.protocol import FINAL_CLOSE_CODES

Message = dict[str, Any]

_REFUSED_STATUSES = frozenset({401, 403, 404, 409, 410, 422})


class Refused(Exception):
    """The visit refused this participant: a final close code or a refused join ticket."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SignallingClient:
    """One participant's signalling connection, kept open until ``close()`` or a final code."""

    def __init__(
        self,
        *,
        base_urls: Sequence[str],
        appointment_id: int,
        headers: Mapping[str, str] | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 3.0,
        timeout: float = 10.0,
    ) -> None:
        if not base_urls:
            raise ValueError("give at least one base URL")
        self.base_urls = list(base_urls)
        self.appointment_id = appointment_id
        self.headers = dict(headers or {})
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.timeout = timeout

        self.state: Message | None = None
        """The last visit state (from ``welcome`` or ``state``)."""
        self.welcomes: list[Message] = []
        """Every ``welcome``: one per (re)connection, with the instance that served it."""
        self.messages: list[Message] = []
        """Every message received except ``pong``, in order."""
        self.closes: list[int | None] = []
        """The close code of every connection that ended."""
        self.reconnect_delays: list[float] = []
        self.final: Refused | None = None

        self._signals: asyncio.Queue[Message] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._connected = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._url = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SignallingClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> Message:
        """Connect; returns the first ``welcome``. Raises ``Refused`` if the visit refuses."""
        self._task = asyncio.create_task(self._run(), name=f"visit-{self.appointment_id}-client")
        await self._wait(lambda: bool(self.welcomes) or self.final is not None)
        if self.final is not None and not self.welcomes:
            await self.close()
            raise self.final
        return self.welcomes[0]

    async def close(self) -> None:
        """Close the socket without leaving (the server records a disconnection)."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(1000)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drop(self) -> None:
        """Break the current socket abruptly (tests: a network drop); the client reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def instance(self) -> str | None:
        """The instance id that served the newest connection."""
        return str(self.welcomes[-1]["instance"]) if self.welcomes else None

    # ------------------------------------------------------------ sending

    async def send(self, message: Message) -> None:
        """Send ``message``, waiting for a (re)connection if the socket is down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            if self.final is not None:
                raise self.final
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("not connected")
            try:
                await asyncio.wait_for(self._connected.wait(), remaining)
            except TimeoutError:
                raise TimeoutError("not connected") from None
            ws = self._ws
            if ws is None:
                continue
            try:
                await ws.send(json.dumps(message))
                return
            except ConnectionClosed:
                await asyncio.sleep(0.01)

    async def signal(self, data: Message) -> None:
        await self.send({"type": "signal", "data": data})

    async def admit(self) -> None:
        await self.send({"type": "admit"})

    async def end(self) -> None:
        await self.send({"type": "end"})

    async def leave(self) -> None:
        """Leave the visit on purpose; the server closes the socket (1000)."""
        await self.send({"type": "leave"})
        await self._wait(lambda: self.final is not None)

    # ------------------------------------------------------------ receiving

    async def next_signal(self, within: float | None = None) -> Message:
        """The next ``signal`` message from the other participant (``within`` seconds: the
        wait's limit, default ``timeout``)."""
        return await asyncio.wait_for(self._signals.get(), within or self.timeout)

    def pending_signals(self) -> int:
        return self._signals.qsize()

    async def wait_state(
        self, predicate: Callable[[Message], bool], within: float | None = None
    ) -> Message:
        """Wait until the visit state satisfies ``predicate``; returns that state."""
        await self._wait(lambda: self.state is not None and predicate(self.state), within)
        assert self.state is not None
        return self.state

    async def wait_message(
        self, predicate: Callable[[Message], bool], within: float | None = None
    ) -> Message:
        """Wait for a received message (any, including earlier ones) matching ``predicate``."""
        await self._wait(lambda: any(predicate(m) for m in self.messages), within)
        return next(m for m in self.messages if predicate(m))

    async def wait_welcomes(self, count: int, within: float | None = None) -> Message:
        """Wait for the ``count``-th connection's welcome (1 = the first)."""
        await self._wait(lambda: len(self.welcomes) >= count, within)
        return self.welcomes[count - 1]

    async def wait_final(self, within: float | None = None) -> Refused:
        """Wait until the connection ended for good (a final close code or a refusal)."""
        await self._wait(lambda: self.final is not None, within)
        assert self.final is not None
        return self.final

    async def _wait(self, ready: Callable[[], bool], within: float | None = None) -> None:
        async with asyncio.timeout(within or self.timeout), self._changed:
            await self._changed.wait_for(ready)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ the connection loop

    async def _ticket(self, base: str) -> Message:
        async with httpx.AsyncClient(base_url=base, headers=self.headers, timeout=5.0) as http:
            r = await http.get(f"/api/v1/visits/{self.appointment_id}/join")
        if r.status_code in _REFUSED_STATUSES:
            try:
                reason = str(r.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                reason = r.text[:200]
            raise Refused(r.status_code, reason)
        r.raise_for_status()
        ticket: Message = r.json()
        return ticket

    async def _open(self, base: str) -> ClientConnection:
        ticket = await self._ticket(base)
        ws_base = "ws" + base.removeprefix("http")
        uri = f"{ws_base}{ticket['websocket_path']}?token={quote(str(ticket['token']))}"
        return await connect(uri, additional_headers=self.headers, open_timeout=5.0)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            base = self.base_urls[self._url % len(self.base_urls)]
            try:
                ws = await self._open(base)
            except Refused as exc:
                self.final = exc
                await self._notify()
                return
            except (OSError, TimeoutError, httpx.HTTPError, InvalidHandshake):
                # This instance is gone or not ready: try the next URL after a pause.
                self._url += 1
                await self._backoff(attempt)
                attempt += 1
                continue
            self._ws = ws
            try:
                async for raw in ws:
                    attempt = 0
                    await self._receive(raw)
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                self._connected.clear()
            code = ws.close_code
            self.closes.append(code)
            if code is not None and code in FINAL_CLOSE_CODES:
                self.final = Refused(code, ws.close_reason or "")
                await self._notify()
                return
            await self._notify()
            await self._backoff(attempt)
            attempt += 1

    async def _backoff(self, attempt: int) -> None:
        delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
        delay *= 0.5 + random.random() / 2
        self.reconnect_delays.append(delay)
        await asyncio.sleep(delay)

    async def _receive(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") == "pong":
            return
        kind = message.get("type")
        if kind == "welcome":
            self.welcomes.append(message)
            self._connected.set()
        if kind in ("welcome", "state"):
            self.state = {k: message[k] for k in ("admitted", "ended", "present") if k in message}
        if kind == "signal":
            self._signals.put_nowait(message)
        self.messages.append(message)
        await self._notify()
