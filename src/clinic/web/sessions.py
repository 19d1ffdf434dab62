"""Signed session cookies (Starlette's SessionMiddleware), Secure when the request is HTTPS.

The cookie is signed with ``CLINIC_SECRET_KEY``, which every instance shares, so a session
started on one instance (or colour) is valid on all. HttpOnly and SameSite=Lax always.
"""

from __future__ import annotations

from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from clinic.core.config import Settings

COOKIE = "clinic_session"


class SchemeAwareSessions:
    """Two SessionMiddleware instances, one setting Secure; chosen per request by its scheme
    (uvicorn derives the scheme from X-Forwarded-Proto behind the router)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        args = {
            "secret_key": settings.secret_key,
            "session_cookie": COOKIE,
            "max_age": int(settings.session_max_age.total_seconds()),
            "same_site": "lax",
        }
        forced = settings.cookie_secure
        self._plain = SessionMiddleware(app, https_only=bool(forced), **args)  # type: ignore[arg-type]
        self._secure = SessionMiddleware(app, https_only=forced is not False, **args)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secure = scope.get("scheme") in ("https", "wss")
        await (self._secure if secure else self._plain)(scope, receive, send)
