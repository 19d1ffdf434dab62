"""Doctor sign-ups under review: an admin approves, rejects with a reason, or asks the doctor
for information; each decision is kept and emailed to the doctor in its own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, String, Text, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import Doctor, User
from clinic.accounts.review_mail import defer_decision_email
from clinic.core.config import Settings
from clinic.core.db import Base, UTCDateTime, utcnow
from clinic.core.errors import InvalidInput, InvalidState, NotFound

MESSAGE_MAX = 2000


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    INFO_REQUESTED = "info_requested"


class DoctorReview(Base):
    """One admin decision on one doctor's sign-up, with what the doctor was told."""

    __tablename__ = "doctor_reviews"
    __table_args__ = (
        CheckConstraint(
            "decision IN ('approved', 'rejected', 'info_requested')", name="decision_known"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, server_default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


@dataclass(frozen=True, slots=True)
class SignUp:
    """A doctor awaiting a decision, with the last one taken (None: not looked at yet)."""

    user: User
    doctor: Doctor
    last: DoctorReview | None

    @property
    def state(self) -> str:
        if self.doctor.approved_at is not None:
            return Decision.APPROVED.value
        return "new" if self.last is None else self.last.decision


async def _last_reviews(session: AsyncSession, doctor_ids: list[int]) -> dict[int, DoctorReview]:
    if not doctor_ids:
        return {}
    rows = await session.scalars(
        select(DoctorReview)
        .where(DoctorReview.doctor_id.in_(doctor_ids))
        .order_by(DoctorReview.at, DoctorReview.id)
    )
    return {r.doctor_id: r for r in rows}  # the newest one per doctor wins


async def sign_ups(*, session: AsyncSession, actor: Actor | None) -> list[SignUp]:
    """Doctors not approved yet (rejected ones last), oldest first; never the smoke accounts."""
    guards.require_admin(actor)
    async with session.begin():
        rows = (
            await session.execute(
                select(User, Doctor)
                .join(Doctor, Doctor.user_id == User.id)
                .where(Doctor.approved_at.is_(None), User.is_smoke.is_(False))
                .order_by(User.created_at, User.id)
            )
        ).all()
        last = await _last_reviews(session, [u.id for u, _ in rows])
    found = [SignUp(u, d, last.get(u.id)) for u, d in rows]
    return sorted(found, key=lambda s: s.state == Decision.REJECTED.value)


def _message(value: str, *, needed: str) -> str:
    value = value.strip()
    if len(value) < 3:
        raise InvalidInput(needed, field="message")
    if len(value) > MESSAGE_MAX:
        raise InvalidInput(f"At most {MESSAGE_MAX} characters.", field="message")
    return value


async def decide(
    *,
    session: AsyncSession,
    actor: Actor | None,
    doctor_id: int,
    decision: Decision,
    message: str = "",
    settings: Settings,
) -> DoctorReview:
    """Record ``decision`` on a sign-up and email it to the doctor, in one transaction.

    A rejection needs its reason and a request for information its question; both are sent
    to the doctor word for word. An approved doctor is not reviewed again."""
    admin = guards.require_admin(actor)
    if decision is Decision.REJECTED:
        message = _message(message, needed="Give the reason for the rejection.")
    elif decision is Decision.INFO_REQUESTED:
        message = _message(message, needed="Write what the doctor should send.")
    else:
        message = message.strip()[:MESSAGE_MAX]
    async with session.begin():
        row = (
            await session.execute(
                select(User, Doctor)
                .join(Doctor, Doctor.user_id == User.id)
                .where(User.id == doctor_id)
                .with_for_update(of=Doctor)
            )
        ).one_or_none()
        if row is None:
            raise NotFound("No such doctor.")
        user, doctor = row
        if doctor.approved_at is not None:
            raise InvalidState(f"{user.name} is already approved.")
        if decision is Decision.APPROVED:
            doctor.approved_at = utcnow()
            doctor.approved_by = admin.user_id
        review = DoctorReview(
            doctor_id=user.id, admin_id=admin.user_id, decision=decision.value, message=message
        )
        session.add(review)
        await session.flush()
        if not user.is_smoke:
            await defer_decision_email(
                session,
                review_id=review.id,
                decision=decision.value,
                doctor_name=user.name,
                doctor_email=user.email,
                message=message,
                settings=settings,
            )
        return review


async def doctor_name(*, session: AsyncSession, doctor_id: int) -> str:
    async with session.begin():
        return await session.scalar(select(User.name).where(User.id == doctor_id)) or "The doctor"
