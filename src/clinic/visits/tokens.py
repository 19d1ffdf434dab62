"""Signed join tokens and TURN credentials. Pure: keys and clocks are arguments.

A join token is bound to one user and one visit (the appointment id) and expires after
``join_token_ttl``; it is signed with ``CLINIC_SECRET_KEY``, so any instance of any colour
accepts a token another one issued.

TURN credentials follow coturn's ``use-auth-secret`` (the TURN REST API draft): the username is
``"<unix expiry>:<user id>"`` and the credential ``base64(HMAC-SHA1(static-auth-secret,
username))``, so coturn checks them without a call back to the clinic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

_SALT = "clinic.visits.join"


class TokenRefused(Exception):
    """Why a join token was not accepted: ``expired`` or ``invalid``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JoinClaim:
    user_id: int
    appointment_id: int


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=_SALT)


def issue_join_token(*, secret: str, user_id: int, appointment_id: int) -> str:
    """A token for ``user_id`` to open the signalling websocket of ``appointment_id``."""
    return _serializer(secret).dumps({"u": user_id, "a": appointment_id})


def read_join_token(
    *, secret: str, token: str, ttl: timedelta, now: datetime | None = None
) -> JoinClaim:
    """The claim of a valid, unexpired token; raises ``TokenRefused`` otherwise."""
    serializer = _serializer(secret)
    try:
        if now is None:
            data = serializer.loads(token, max_age=int(ttl.total_seconds()))
        else:
            data, signed_at = serializer.loads(token, return_timestamp=True)
            if now - signed_at > ttl:
                raise TokenRefused("expired")
    except SignatureExpired as exc:
        raise TokenRefused("expired") from exc
    except BadSignature as exc:
        raise TokenRefused("invalid") from exc
    if not (
        isinstance(data, dict) and isinstance(data.get("u"), int) and isinstance(data.get("a"), int)
    ):
        raise TokenRefused("invalid")
    return JoinClaim(user_id=data["u"], appointment_id=data["a"])


@dataclass(frozen=True, slots=True)
class TurnCredential:
    username: str
    credential: str
    expires_at: datetime


def turn_credential(*, secret: str, user_id: int, now: datetime, ttl: timedelta) -> TurnCredential:
    """Time-limited TURN credentials in the form coturn's ``use-auth-secret`` checks."""
    expires_at = now + ttl
    username = f"{int(expires_at.timestamp())}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(
        username=username, credential=base64.b64encode(digest).decode(), expires_at=expires_at
    )


def ice_servers(
    *,
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secret: str | None,
    user_id: int,
    now: datetime,
    ttl: timedelta,
) -> list[dict[str, object]]:
    """``RTCPeerConnection``'s ``iceServers``: STUN as configured, TURN with fresh credentials
    (TURN is left out when no secret is configured: it would refuse every allocation)."""
    servers: list[dict[str, object]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secret:
        cred = turn_credential(secret=turn_secret, user_id=user_id, now=now, ttl=ttl)
        servers.append(
            {"urls": list(turn_urls), "username": cred.username, "credential": cred.credential}
        )
    return servers
