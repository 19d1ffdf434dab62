"""One place that turns errors into responses: JSON for the API, a page for HTML.

Every error answers with the envelope ``{"error": {"code", "message"}}`` (or the error page),
never Starlette's ``text/plain`` 500, and leaves the keep-alive connection usable: an
unexpected exception is logged and answered here instead of reaching the server, which would
drop the connection.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clinic.core.errors import ClinicError, TooManyAttempts
from clinic.web.pages import LoginRequired, login_redirect, plain_message
from clinic.web.render import render, viewer_zone_or_utc

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    """Stable, machine-readable: ``not_found``, ``slot_taken``, ``invalid_input``, ..."""
    message: str
    field: str | None = None
    """The input the error is about, when there is one."""
    fields: list[FieldProblem] | None = None
    """Every refused input (``invalid_input`` from validation)."""


class ErrorEnvelope(BaseModel):
    """The body of every error answer of the API."""

    error: ErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("Not logged in (no or an invalid session or bearer token)."),
    403: _documented("Logged in, but not allowed (or a cookie call without its CSRF token)."),
    404: _documented("No such thing, or not one this user may see."),
    409: _documented("A conflict: the slot is taken, the state does not allow it, and so on."),
    413: _documented("The request body is larger than the configured limit."),
    422: _documented("Invalid input; ``error.fields`` names each refused field."),
    429: _documented("Too many attempts; retry after ``Retry-After`` seconds."),
    503: _documented("Overloaded; nothing was changed. Retry after ``Retry-After`` seconds."),
}
"""The error answers every API router documents (FastAPI ``responses=``)."""


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", ""
    )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    if wants_json(request):
        return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)
    response = render(
        request,
        "error.html",
        status_code=status,
        code=code,
        message=message,
        zone=viewer_zone_or_utc(request),
    )
    if headers:
        response.headers.update(headers)
    return response


async def clinic_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClinicError)
    headers = None
    if isinstance(exc, TooManyAttempts):
        headers = {"Retry-After": str(exc.retry_after)}
    extra = {"field": exc.field} if exc.field else {}
    return _respond(request, exc.status, exc.code, exc.message, headers, **extra)


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        out.append({"field": ".".join(loc) or "request", "message": str(err.get("msg", ""))})
    return out


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = _field_errors(exc)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    if not wants_json(request):  # a person reads it: plain words, not the validator's text
        summary = " ".join(
            f"{f['field'].replace('_', ' ').capitalize()}: {plain_message(err)}"
            for f, err in zip(fields, exc.errors(), strict=True)
        )
    return _respond(request, 422, "invalid_input", summary or "Invalid input.", fields=fields)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return _respond(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


def _refused_value(exc: BaseException) -> bool:
    """Whether the database (or its driver) refused a value: SQLSTATE class 22, "data
    exception", or the driver's own check that a parameter fits its column type."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, DataError) or type(seen).__name__ == "DataError":
            return True
        if str(getattr(seen, "sqlstate", "") or "").startswith("22"):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


async def database_error(request: Request, exc: Exception) -> Response:
    """A value the database refused (out of range, NUL characters) is the input's fault: 422,
    and the transaction that carried it is rolled back. The schemas should catch it first.
    Anything else from the database is a 500 in the envelope."""
    where = f"{request.method} {request.url.path}"
    if _refused_value(exc):
        log.warning("database refused a value on %s: %s", where, exc)
        return _respond(request, 422, "invalid_input", "A value is out of range or not allowed.")
    log.error("database error on %s", where, exc_info=exc)
    return _respond(request, 500, "internal_error", "Something went wrong.")


async def pool_exhausted(request: Request, exc: Exception) -> Response:
    """Every database connection of this instance stayed busy for ``db_pool_timeout``: the
    instance is overloaded, nothing was changed, and asking again shortly is right (503)."""
    log.warning("no free database connection for %s %s: %s", request.method, request.url.path, exc)
    return _respond(
        request,
        503,
        "busy",
        "The clinic is busy right now. Nothing was changed; please try again in a moment.",
        {"Retry-After": "1"},
    )


class UnexpectedErrors:
    """Answers an exception nothing else handled with a 500 in the envelope, and keeps the
    connection open (uvicorn closes it when the exception reaches it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            request = Request(scope, receive)
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = _respond(request, 500, "internal_error", "Something went wrong.")
            await response(scope, receive, send)


async def login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return login_redirect(request, exc.back)


def install(app: FastAPI) -> None:
    """Register the handlers; call before adding the session middleware, so the unexpected
    error page still sees the session (the catch-all sits inside it)."""
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(ClinicError, clinic_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(PoolTimeout, pool_exhausted)
    app.add_middleware(UnexpectedErrors)
