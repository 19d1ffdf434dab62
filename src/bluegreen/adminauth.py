"""Who may use the admin API: the token, or a browser session the token opened.

* The token (``Authorization: Bearer``) and the login form's token are compared in
  constant time (:func:`hmac.compare_digest`).
* A login opens a server-side session: a random id in an HttpOnly, SameSite=Strict cookie
  that expires after :data:`SESSION_TTL`; logout revokes it at once (the cookie alone is
  worthless afterwards), and so does a daemon restart.
* A write made with the cookie must come from the dashboard itself: its ``Origin`` (or
  ``Sec-Fetch-Site``), when the browser sends one, names this site, and it carries the
  session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``). Writes with the
  bearer token need neither: no browser sends that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

COOKIE = "bluegreen_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 8 * 3600.0
"""Seconds a dashboard login lasts."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Session:
    """One browser login."""

    csrf: str
    expires: float


class Sessions:
    """Open dashboard sessions, kept in memory by id digest (never the id itself)."""

    def __init__(
        self, *, ttl: float = SESSION_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._open: dict[str, Session] = {}

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def open(self) -> str:
        """A new session; its id, for the cookie."""
        now = self._clock()
        self._open = {k: s for k, s in self._open.items() if s.expires > now}
        session_id = secrets.token_urlsafe(32)
        self._open[self._key(session_id)] = Session(
            csrf=secrets.token_urlsafe(32), expires=now + self.ttl
        )
        return session_id

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, or ``None`` (unknown, revoked or expired)."""
        if not session_id:
            return None
        session = self._open.get(self._key(session_id))
        if session is None or session.expires <= self._clock():
            return None
        return session

    def revoke(self, session_id: str) -> None:
        """End the session: its cookie is refused from now on."""
        self._open.pop(self._key(session_id), None)


def bearer_ok(request: web.Request, token: str) -> bool:
    """The request names the admin token in ``Authorization: Bearer``."""
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and tokens_equal(header[7:].strip(), token)


def same_origin(request: web.Request) -> bool:
    """Nothing the browser says marks the request as coming from another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def csrf_ok(request: web.Request, session: Session) -> bool:
    """The request carries ``session``'s CSRF token (header, or a form's ``csrf`` field)."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        given = str((await request.post()).get("csrf", ""))
    return given is not None and tokens_equal(given, session.csrf)
