"""Email verification: a patient who registers gets a link; until it is opened they can log
in and look around but not book (``guards.require_verified_patient``).

The link carries a token signed with ``CLINIC_SECRET_KEY`` (itsdangerous, as the visit join
tokens), naming the user and the address it was sent to, valid ``email_verify_ttl``. Nothing
is stored for it; opening it twice is harmless.
"""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import emails, guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import User
from clinic.core.config import Settings
from clinic.core.errors import InvalidInput, NotFound

SALT = "clinic.accounts.verify-email"
PATH = "/verify-email"


class VerificationRefused(InvalidInput):
    code = "verification_token_invalid"


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=SALT)


async def send_link(
    session: AsyncSession, *, user: User, base_url: str, settings: Settings
) -> None:
    """Queue the verification email (in the caller's transaction)."""
    token = _serializer(settings).dumps({"u": user.id, "e": user.email})
    url = emails.link(settings, base_url, f"{PATH}?token={token}")
    await emails.defer_email(
        session,
        user=user,
        subject="Confirm your email address",
        body=(
            "welcome to the clinic. Please confirm your email address, so we can reach you\n"
            f"about your appointments, by opening this link:\n\n{url}\n\n"
            "You can book your first appointment once it is confirmed.\n"
        ),
        key=f"verify-email:{user.id}:{token[-12:]}",
        settings=settings,
    )


async def resend(
    *, session: AsyncSession, actor: Actor | None, base_url: str, settings: Settings
) -> bool:
    """Send the link again; False when there is nothing to verify."""
    actor = guards.authenticated(actor)
    async with session.begin():
        user = await session.get(User, actor.user_id)
        if user is None:
            raise NotFound("No such user.")
        if not user.email_verification_pending:
            return False
        await send_link(session, user=user, base_url=base_url, settings=settings)
    return True


async def confirm(*, session: AsyncSession, token: str, settings: Settings) -> None:
    """Mark the address of the token's user verified, if it is still the address it was
    sent to."""
    max_age = int(settings.email_verify_ttl.total_seconds())
    try:
        claim = _serializer(settings).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise VerificationRefused(
            "This link has expired; send a new one from your account page.", field="token"
        ) from exc
    except BadSignature as exc:
        raise VerificationRefused("This link is not valid.", field="token") from exc
    if not (isinstance(claim, dict) and isinstance(claim.get("u"), int)):
        raise VerificationRefused("This link is not valid.", field="token")
    async with session.begin():
        done = await session.execute(
            update(User)
            .where(User.id == claim["u"], User.email == claim.get("e"))
            .values(email_verification_pending=False)
        )
        if not getattr(done, "rowcount", 0):
            raise VerificationRefused("This link is not valid.", field="token")
