"""The request an audit record belongs to: client address and request id, per request.

A small ASGI middleware puts them in a context variable, so services record them without
taking the request as an argument. The router sends ``X-Request-Id``; a request without a sane
one gets a fresh id, and the response echoes it either way.

It also tells a **shadow** request: a live user's read that the data plane mirrored to the
colour being tested (Envoy appends ``-shadow`` to its Host; clients may not send such a
Host, the data plane refuses it). A shadow request is a read with no side effects: its
database transactions are read-only (``clinic.core.db``), it writes no audit record as if
the user had read the record again (``clinic.core.audit``), and it may only be a GET or
HEAD.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


SHADOW_SUFFIX = "-shadow"
READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class RequestContext:
    address: str | None
    request_id: str | None
    shadow: bool = False


NO_REQUEST = RequestContext(address=None, request_id=None)
_current: ContextVar[RequestContext | None] = ContextVar("clinic_request_context", default=None)


def current() -> RequestContext:
    """The current request's context (address and request id both None outside a request,
    e.g. in background jobs)."""
    return _current.get() or NO_REQUEST


def use(ctx: RequestContext) -> object:
    """Set the context (for code that is not an HTTP request, e.g. a job); returns a token
    for ``reset``."""
    return _current.set(ctx)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def request_id_from(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == HEADER.encode():
            candidate = str(value.decode("latin-1")).strip()
            if _SANE.match(candidate):
                return candidate
    return uuid.uuid4().hex


def is_shadow(scope: Scope) -> bool:
    """Whether the request's Host is one the data plane gives a mirrored request."""
    for key, value in scope.get("headers", ()):
        if key == b"host":
            name = value.decode("latin-1").strip()
            if name.startswith("["):  # [::1]-shadow:8000
                name = name.rpartition("]")[2]
            return str(name).partition(":")[0].endswith(SHADOW_SUFFIX)
    return False


async def _refuse_shadow_write(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b'{"error":{"code":"bad_request","message":"A mirrored request may only read."}}'
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Sets the request context for each HTTP or websocket request and echoes
    ``X-Request-Id`` on HTTP responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        client = scope.get("client")
        address = str(client[0]) if client else None
        shadow = is_shadow(scope)
        if shadow and (scope["type"] == "websocket" or scope.get("method") not in READS):
            await _refuse_shadow_write(scope, receive, send)
            return
        ctx = RequestContext(address=address, request_id=request_id, shadow=shadow)
        token = _current.set(ctx)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
