"""Request dependencies: the database session, the acting user, CSRF checks.

Authentication (who is this?) happens here; authorization (may they?) is in
``clinic.accounts.guards``, asked by the services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from clinic.accounts import service as accounts
from clinic.accounts.guards import Actor
from clinic.core.config import Settings
from clinic.core.errors import CsrfFailed
from clinic.core.security import new_token, same

SESSION_USER = "uid"
SESSION_CSRF = "csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.clinic
    return state


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with app_state(request).sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db_session)]


def settings_of(request: Request) -> Settings:
    return app_state(request).settings


SettingsDep = Annotated[Settings, Depends(settings_of)]


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use): hidden field in every form."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = new_token()
        request.session[SESSION_CSRF] = token
    return token


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def current_actor(request: Request, session: Session) -> Actor | None:
    """The user this request acts for: a bearer token, else the signed session cookie.

    A cookie-authenticated API call that changes something must carry the session's CSRF
    token in ``X-CSRF-Token`` (a bearer token cannot be sent by another site, a cookie can).
    """
    cached: Actor | None = getattr(request.state, "actor", None)
    if cached is not None:
        return cached
    token = bearer_token(request)
    actor: Actor | None = None
    if token is not None:
        actor = await accounts.actor_for_token(session=session, token=token)
    else:
        uid = request.session.get(SESSION_USER)
        if isinstance(uid, int):
            actor = await accounts.load_actor(session=session, user_id=uid)
            if actor is None:
                request.session.clear()
            elif request.method not in SAFE_METHODS and request.url.path.startswith("/api/"):
                sent = request.headers.get(CSRF_HEADER, "")
                expected = request.session.get(SESSION_CSRF)
                if not (isinstance(expected, str) and sent and same(sent, expected)):
                    raise CsrfFailed(
                        "Send the session's CSRF token in X-CSRF-Token, or use a bearer token."
                    )
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor | None, Depends(current_actor)]


async def check_csrf_form(request: Request) -> None:
    """Every HTML form post carries the session's CSRF token."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = request.session.get(SESSION_CSRF)
    if not (isinstance(sent, str) and isinstance(expected, str) and same(sent, expected)):
        raise CsrfFailed("The form expired or came from another site. Reload the page and retry.")


CsrfChecked = Depends(check_csrf_form)


def log_in(request: Request, actor_id: int) -> None:
    """Start a fresh session for the user (a new CSRF token too: no session fixation)."""
    request.session.clear()
    request.session[SESSION_USER] = actor_id
    request.session[SESSION_CSRF] = new_token()


def log_out(request: Request) -> None:
    request.session.clear()
