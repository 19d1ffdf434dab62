"""Who a request acts for: one loader for HTTP requests and websockets, and the route
dependencies built on it.

Authentication (who is this?) happens here; authorization (may they?) is in
``clinic.accounts.guards``, asked by the services.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from clinic.accounts import service
from clinic.accounts.guards import Actor
from clinic.core.errors import CsrfFailed
from clinic.core.security import same
from clinic.web.deps import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_CSRF,
    SESSION_GENERATION,
    SESSION_USER,
    Session,
    app_state,
    bearer_token,
)
from clinic.web.pages import LoginRequired, text


async def connection_actor(connection: HTTPConnection, session: AsyncSession) -> Actor | None:
    """The user a request or websocket acts for: a bearer token in ``Authorization`` (neither
    revoked nor expired), else the signed session cookie's user. A cookie naming a deleted
    user, or a session ended since (log out everywhere, password change), is cleared.

    The one place a credential becomes an actor: open visit sockets re-ask it, so revoking
    anything it accepts also closes them."""
    token = bearer_token(connection)
    if token is not None:
        settings = app_state(connection).settings
        return await service.actor_for_token(session=session, token=token, settings=settings)
    if "session" not in connection.scope:
        return None
    uid = connection.session.get(SESSION_USER)
    if not isinstance(uid, int):
        return None
    # Sessions begun before generations existed carry none: they belong to generation 0.
    generation = connection.session.get(SESSION_GENERATION, 0)
    if not isinstance(generation, int):
        return None
    actor = await service.load_actor(session=session, user_id=uid, generation=generation)
    if actor is None:
        connection.session.clear()
    return actor


def _check_api_csrf(request: Request) -> None:
    """A cookie-authenticated API call that changes something must carry the session's CSRF
    token in ``X-CSRF-Token`` (a bearer token cannot be sent by another site, a cookie can)."""
    if request.method in SAFE_METHODS or not request.url.path.startswith("/api/"):
        return
    sent = request.headers.get(CSRF_HEADER, "")
    expected = request.session.get(SESSION_CSRF)
    if not (isinstance(expected, str) and sent and same(sent, expected)):
        raise CsrfFailed("Send the session's CSRF token in X-CSRF-Token, or use a bearer token.")


async def current_actor(request: Request, session: Session) -> Actor | None:
    """The user this request acts for (None: anonymous); loaded once per request."""
    cached: Actor | None = getattr(request.state, "actor", None)
    if cached is not None:
        return cached
    actor = await connection_actor(request, session)
    if actor is not None and bearer_token(request) is None:
        _check_api_csrf(request)
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor | None, Depends(current_actor)]


async def page_actor(actor: CurrentActor) -> Actor:
    """The logged-in user of a page; an anonymous visitor is sent to log in and back here."""
    if actor is None:
        raise LoginRequired()
    return actor


PageActor = Annotated[Actor, Depends(page_actor)]


def page_actor_back_to(back: str, *, form_fields: tuple[str, ...] = ()) -> Any:
    """Like :data:`PageActor` for a form post: after logging in, the visitor comes back to
    ``back`` (formatted with the route's path parameters; with ``form_fields``, the posted
    values as its query), not to the post's URL."""

    async def dependency(request: Request, actor: CurrentActor) -> Actor:
        if actor is not None:
            return actor
        path = back.format(**request.path_params)
        if form_fields:
            form = await request.form()
            path += "?" + urlencode({k: text(form, k) for k in form_fields})
        raise LoginRequired(path)

    return Depends(dependency)
