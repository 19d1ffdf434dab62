"""Request dependencies every feature shares: the app state, the database session, the
settings, CSRF checks and the session cookie's login. Who the user is: ``clinic.accounts.deps``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from clinic.core.config import Settings
from clinic.core.errors import CsrfFailed
from clinic.core.security import new_token, same

SESSION_USER = "uid"
SESSION_CSRF = "csrf"
SESSION_GENERATION = "gen"
"""The user's ``session_generation`` when the session began: a newer one in the database
(log out everywhere, password change) ends it."""
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


def app_state(connection: HTTPConnection) -> AppState:
    """The app's state (``clinic.app.ClinicState``: this ground part and each feature's)."""
    state: AppState = connection.app.state.clinic
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


def bearer_token(connection: HTTPConnection) -> str | None:
    """The bearer token of the ``Authorization`` header, if any (requests and websockets)."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def check_csrf_form(request: Request) -> None:
    """Every HTML form post carries the session's CSRF token."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = request.session.get(SESSION_CSRF)
    if not (isinstance(sent, str) and isinstance(expected, str) and same(sent, expected)):
        raise CsrfFailed("The form expired or came from another site. Reload the page and retry.")


CsrfChecked = Depends(check_csrf_form)


def log_in(request: Request, actor_id: int, generation: int) -> None:
    """Start a fresh session for the user (a new CSRF token too: no session fixation), valid
    while their ``session_generation`` is ``generation``."""
    request.session.clear()
    request.session[SESSION_USER] = actor_id
    request.session[SESSION_GENERATION] = generation
    request.session[SESSION_CSRF] = new_token()


def log_out(request: Request) -> None:
    request.session.clear()
