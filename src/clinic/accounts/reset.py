"""Password reset by email: a single-use token that expires, of which only the SHA-256 is
stored. Asking gives the same answer whether or not the address has an account; using the
token sets the password, ends every session, lifts the login lockout and is audited.

The email goes through the clinic's outbox (``clinic.accounts.emails``), deferred in the same
transaction as the token, so neither exists without the other.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import emails, lockout
from clinic.accounts.models import PasswordReset, Role, User
from clinic.core import audit
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.core.errors import InvalidInput
from clinic.core.security import hash_password, new_token, password_problem, token_digest

PATH = "/password-reset/confirm"
SENT_MESSAGE = (
    "If an account has this email address, a link to choose a new password is on its way. "
    "It works once, for a limited time."
)
"""The answer to every reset request, known address or not."""
OPEN_RESETS = 3
"""Unused, unexpired reset links one account may hold; asking for more sends nothing."""


class ResetRefused(InvalidInput):
    code = "reset_token_invalid"


async def request_reset(
    *, session: AsyncSession, email: str, base_url: str, settings: Settings
) -> None:
    """Email a reset link to ``email`` if an account has it; otherwise do nothing. The
    caller answers the same either way."""
    email = email.strip().lower()
    now = utcnow()
    async with session.begin():
        user = await session.scalar(select(User).where(User.email == email))
        if user is None or user.is_smoke:
            return
        open_resets = await session.scalar(
            select(func.count())
            .select_from(PasswordReset)
            .where(
                PasswordReset.user_id == user.id,
                PasswordReset.used_at.is_(None),
                PasswordReset.expires_at > now,
            )
        )
        if (open_resets or 0) >= OPEN_RESETS:
            return
        token = new_token()
        reset = PasswordReset(
            user_id=user.id,
            token_hash=token_digest(token),
            expires_at=now + settings.password_reset_ttl,
        )
        session.add(reset)
        await session.flush()
        url = emails.link(settings, base_url, f"{PATH}?{urlencode({'token': token})}")
        minutes = int(settings.password_reset_ttl.total_seconds() // 60)
        await emails.defer_email(
            session,
            user=user,
            subject="Reset your clinic password",
            body=(
                "someone (we hope you) asked to reset the password of your clinic account.\n"
                f"Choose a new password here within {minutes} minutes:\n\n{url}\n\n"
                "The link works once. If you did not ask for it, ignore this email: your\n"
                "password stays as it is.\n"
            ),
            key=f"password-reset:{reset.id}",
            settings=settings,
        )


async def complete_reset(
    *, session: AsyncSession, token: str, new_password: str, settings: Settings
) -> User:
    """Set the password of the token's user: the token must be unused and unexpired. Every
    reset link of the user is used up, every session ends, the login lockout is lifted."""
    now = utcnow()
    async with session.begin():
        reset = await session.scalar(
            select(PasswordReset)
            .where(PasswordReset.token_hash == token_digest(token))
            .with_for_update()
        )
        if reset is None or reset.used_at is not None or reset.expires_at <= now:
            raise ResetRefused(
                "This reset link is invalid, used or expired. Ask for a new one.", field="token"
            )
        user = await session.get(User, reset.user_id, with_for_update=True)
        assert user is not None  # the reset row is deleted with its user
        problem = password_problem(
            new_password, min_length=settings.password_min_length, email=user.email
        )
        if problem:
            raise InvalidInput(problem, field="new_password")
        user.password_hash = await asyncio.to_thread(hash_password, new_password)
        user.session_generation += 1
        await session.execute(
            update(PasswordReset)
            .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
            .values(used_at=now)
        )
        await lockout.unlock(session, user.email)
        await audit.record(
            session,
            actor=_Self(user.id, user.role),
            patient_id=user.id if user.role == Role.PATIENT.value else None,
            action="update",
            subject="password",
        )
    return user


class _Self:
    """The user resetting their own password (an audit principal)."""

    def __init__(self, user_id: int, role: str) -> None:
        self._user_id, self._role = user_id, role

    @property
    def user_id(self) -> int:
        return self._user_id

    @property
    def role(self) -> str:
        return self._role
