"""The email that tells a doctor what an admin decided on their sign-up: composed here from
``web/templates/notify/doctor_review_*.txt`` and deferred, in the decision's transaction, as
a ready ``send_email`` job that ``clinic.notify`` sends (SMTP) or keeps (outbox)."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.core import jobs
from clinic.core.config import Settings
from clinic.core.db import utcnow

TEMPLATES = Path(__file__).parent.parent / "web" / "templates" / "notify"

# Plain text: no HTML escaping ("O'Brien" stays O'Brien); a missing value is an error.
_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=False,  # noqa: S701 - text/plain emails, never rendered as HTML
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

SUBJECTS = {
    "approved": "Your doctor account is approved",
    "rejected": "Your doctor account was not approved",
    "info_requested": "We need more information about your doctor account",
}


def compose(
    *,
    review_id: int,
    decision: str,
    doctor_name: str,
    doctor_email: str,
    message: str,
    mail_from: str,
) -> dict[str, str | None]:
    """The email as ``clinic.notify.mail.Email`` fields (JSON, so it travels as job args)."""
    body = _ENV.get_template(f"doctor_review_{decision}.txt").render(
        name=doctor_name, message=message
    )
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "clinic.invalid"
    return {
        "dedupe_key": f"doctor-review:{review_id}",
        "to": doctor_email,
        "to_name": doctor_name,
        "subject": SUBJECTS[decision],
        "body": body,
        "message_id": f"<doctor-review-{review_id}@{domain}>",
        "date": utcnow().isoformat(),
    }


async def defer_decision_email(
    session: AsyncSession,
    *,
    review_id: int,
    decision: str,
    doctor_name: str,
    doctor_email: str,
    message: str,
    settings: Settings,
) -> int:
    """Defer the email in the caller's transaction: no decision without its email."""
    email = compose(
        review_id=review_id,
        decision=decision,
        doctor_name=doctor_name,
        doctor_email=doctor_email,
        message=message,
        mail_from=settings.mail_from,
    )
    return await jobs.defer(session, jobs.SEND_EMAIL, {"kind": "composed", "email": email})
