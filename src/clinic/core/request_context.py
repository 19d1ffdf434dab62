"""The request an audit record belongs to: client address and request id, per request.

A small ASGI middleware puts them in a context variable, so services record them without
taking the request as an argument. The router sends ``X-Request-Id``; a request without a sane
one gets a fresh id, and the response echoes it either way.
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


@dataclass(frozen=True, slots=True)
class RequestContext:
    address: str | None
    request_id: str | None


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
        token = _current.set(RequestContext(address=address, request_id=request_id))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
