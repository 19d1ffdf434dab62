"""Where a composed email goes: the configured SMTP server, else the outbox table."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import parseaddr

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.core.config import Settings
from clinic.notify.mail import Email, to_message
from clinic.notify.models import OutboxMessage


def smtp_send(msg: EmailMessage, settings: Settings) -> smtplib.SMTP:
    """Hand ``msg`` to the SMTP server (blocking: run it in a thread). Returns the still open
    connection: the caller records the send first and says QUIT after (``smtp_close``), so
    the window between the server's acceptance and the record is as short as it can be."""
    assert settings.smtp_host is not None
    sender = parseaddr(settings.mail_from)[1]
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(msg, from_addr=sender)
    except BaseException:
        smtp_close(smtp)
        raise
    return smtp


def smtp_close(smtp: smtplib.SMTP) -> None:
    """QUIT, ignoring errors: the message was already accepted."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


async def store_in_outbox(session: AsyncSession, email: Email, settings: Settings) -> None:
    msg = to_message(email, mail_from=settings.mail_from)
    await session.execute(
        insert(OutboxMessage).values(
            dedupe_key=email.dedupe_key,
            recipient=email.to,
            subject=email.subject,
            body=email.body,
            ics=email.ics,
            raw=msg.as_string(),
        )
    )
