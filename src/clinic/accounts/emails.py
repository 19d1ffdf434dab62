"""Emails about accounts (password reset, email verification), sent through the clinic's
outbox like every other: a ``send_email`` job deferred in the caller's transaction, so the
email exists exactly when the change that caused it commits.

``clinic.notify`` sits above accounts, so the email is composed here as the plain data its
job sends (the fields of ``clinic.notify.mail.Email``, job kind ``composed``).
"""

from __future__ import annotations

from email.utils import parseaddr

from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts.models import User
from clinic.core import jobs
from clinic.core.config import Settings
from clinic.core.db import utcnow


def link(settings: Settings, base_url: str, path: str) -> str:
    """An absolute link into the clinic: ``CLINIC_PUBLIC_URL`` if set, else where the request
    came to."""
    return (settings.public_url or base_url).rstrip("/") + path


async def defer_email(
    session: AsyncSession, *, user: User, subject: str, body: str, key: str, settings: Settings
) -> None:
    """Queue ``body`` for ``user`` (once per ``key``) in the session's open transaction."""
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "clinic.invalid"
    email = {
        "dedupe_key": key,
        "to": user.email,
        "to_name": user.name,
        "subject": subject,
        "body": f"Hello {user.name},\n\n{body}",
        "message_id": f"<{key.replace(':', '.')}@{domain}>",
        "date": utcnow().isoformat(),
    }
    await jobs.defer(session, jobs.SEND_EMAIL, {"kind": "composed", "email": email})
