"""Account use cases: register, log in (throttled), approve doctors, API tokens, profiles."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards
from clinic.accounts.guards import Actor
from clinic.accounts.models import ApiToken, Doctor, LoginThrottle, Patient, Role, User
from clinic.accounts.schemas import DoctorCreate, PatientCreate, PatientUpdate
from clinic.accounts.specialties import canonical_specialty
from clinic.core import audit
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.core.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    TooManyAttempts,
)
from clinic.core.security import (
    hash_password,
    new_token,
    password_problem,
    token_digest,
    verify_password,
)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def actor_of(user: User, doctor: Doctor | None = None) -> Actor:
    return Actor(
        user_id=user.id,
        role=Role(user.role),
        name=user.name,
        email=user.email,
        time_zone=user.time_zone,
        approved=doctor.approved_at is not None if doctor is not None else True,
        is_smoke=user.is_smoke,
    )


def _check_password(settings: Settings, password: str, email: str) -> None:
    problem = password_problem(password, min_length=settings.password_min_length, email=email)
    if problem:
        raise InvalidInput(problem, field="password")


async def _new_user(
    session: AsyncSession,
    *,
    email: str,
    name: str,
    password: str,
    role: Role,
    time_zone: str,
    is_smoke: bool = False,
) -> User:
    # argon2 takes tens of milliseconds of CPU by design: in a worker thread, the event loop
    # keeps serving (health checks included) while it runs.
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(
        email=normalise_email(email),
        name=name,
        password_hash=password_hash,
        role=role.value,
        time_zone=time_zone,
        is_smoke=is_smoke,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        if "uq_users_email" in str(exc.orig):
            raise EmailTaken("An account with this email already exists.", field="email") from exc
        raise
    return user


async def register_patient(
    *, session: AsyncSession, data: PatientCreate, settings: Settings, is_smoke: bool = False
) -> User:
    _check_password(settings, data.password, data.email)
    async with session.begin():
        user = await _new_user(
            session,
            email=data.email,
            name=data.name,
            password=data.password,
            role=Role.PATIENT,
            time_zone=data.time_zone,
            is_smoke=is_smoke,
        )
        session.add(Patient(user_id=user.id, date_of_birth=data.date_of_birth))
        await _audit(session, actor_of(user), user.id, "create")
    return user


async def register_doctor(
    *,
    session: AsyncSession,
    data: DoctorCreate,
    settings: Settings,
    is_smoke: bool = False,
    approved: bool = False,
) -> User:
    """A doctor registers themself; they cannot be booked until an admin approves them."""
    _check_password(settings, data.password, data.email)
    async with session.begin():
        user = await _new_user(
            session,
            email=data.email,
            name=data.name,
            password=data.password,
            role=Role.DOCTOR,
            time_zone=data.time_zone,
            is_smoke=is_smoke,
        )
        # The managed list's spelling (the smoke doctor's synthetic specialty is not on it).
        specialty = (
            data.specialty if is_smoke else await canonical_specialty(session, data.specialty)
        )
        taken = await session.scalar(
            select(Doctor.user_id).where(Doctor.licence_number == data.licence_number)
        )
        if taken is not None:
            raise InvalidInput(
                "A doctor with this licence number is already registered.",
                field="licence_number",
            )
        session.add(
            Doctor(
                user_id=user.id,
                specialty=specialty,
                licence_number=data.licence_number,
                bio=data.bio,
                approved_at=utcnow() if approved else None,
            )
        )
    return user


async def create_admin(
    *, session: AsyncSession, email: str, name: str, password: str, settings: Settings
) -> User:
    _check_password(settings, password, email)
    async with session.begin():
        return await _new_user(
            session, email=email, name=name, password=password, role=Role.ADMIN, time_zone="UTC"
        )


@dataclass(frozen=True, slots=True)
class _Throttle:
    failures: int
    locked_until: datetime | None


async def _throttle_state(session: AsyncSession, keys: list[str]) -> list[_Throttle]:
    rows = await session.execute(select(LoginThrottle).where(LoginThrottle.key.in_(keys)))
    return [_Throttle(r.failures, r.locked_until) for r in rows.scalars()]


async def authenticate(
    *, session: AsyncSession, email: str, password: str, address: str, settings: Settings
) -> User:
    """Check credentials. Failures per account and per address are counted in the database
    (so every instance sees them): after a few the answer is slowed down, after
    ``login_max_failures`` the account or address is refused for ``login_lockout``."""
    email = normalise_email(email)
    keys = [f"account:{email}", f"address:{address}"]
    now = utcnow()
    async with session.begin():
        states = await _throttle_state(session, keys)
    locked = [s.locked_until for s in states if s.locked_until and s.locked_until > now]
    if locked:
        wait = int((max(locked) - now).total_seconds()) + 1
        minutes = max(1, round(wait / 60))
        raise TooManyAttempts(
            f"Too many failed logins. Try again in about {minutes} minute(s).", retry_after=wait
        )
    worst = max((s.failures for s in states), default=0)
    if worst >= settings.login_slowdown_after:
        extra = worst - settings.login_slowdown_after
        await asyncio.sleep(min(settings.login_slowdown_seconds * (2**extra), 8.0))

    async with session.begin():
        user = await session.scalar(select(User).where(User.email == email))
        known = user.password_hash if user else None
        ok = await asyncio.to_thread(verify_password, known, password)
        if ok and user is not None:
            await session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))
            return user
        for key in keys:
            await _record_failure(session, key, now, settings)
    raise InvalidCredentials("Email or password is wrong.")


async def _record_failure(
    session: AsyncSession, key: str, now: datetime, settings: Settings
) -> None:
    # Lock the counter row so concurrent failures on several instances all count.
    await session.execute(
        insert(LoginThrottle)
        .values(key=key, failures=0, first_failure_at=now)
        .on_conflict_do_nothing(index_elements=[LoginThrottle.key])
    )
    row = await session.scalar(
        select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
    )
    assert row is not None
    if row.first_failure_at < now - settings.login_lockout:
        row.failures, row.first_failure_at = 0, now  # old failures no longer count
    row.failures += 1
    if row.failures >= settings.login_max_failures:
        row.locked_until = now + settings.login_lockout
        row.failures, row.first_failure_at = 0, now


async def load_actor(*, session: AsyncSession, user_id: int) -> Actor | None:
    async with session.begin():
        row = (
            await session.execute(
                select(User, Doctor)
                .outerjoin(Doctor, Doctor.user_id == User.id)
                .where(User.id == user_id)
            )
        ).first()
    if row is None:
        return None
    return actor_of(row[0], row[1])


async def actor_for_token(*, session: AsyncSession, token: str) -> Actor | None:
    digest = token_digest(token)
    async with session.begin():
        row = (
            await session.execute(
                select(User, Doctor, ApiToken)
                .join(ApiToken, ApiToken.user_id == User.id)
                .outerjoin(Doctor, Doctor.user_id == User.id)
                .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
            )
        ).first()
        if row is None:
            return None
        row[2].last_used_at = utcnow()
    return actor_of(row[0], row[1])


async def create_api_token(
    *, session: AsyncSession, actor: Actor | None, name: str
) -> tuple[ApiToken, str]:
    actor = guards.authenticated(actor)
    raw = "clk_" + new_token()
    async with session.begin():
        token = ApiToken(user_id=actor.user_id, name=name, token_hash=token_digest(raw))
        session.add(token)
        await session.flush()
        await session.refresh(token)
    return token, raw


async def list_api_tokens(*, session: AsyncSession, actor: Actor | None) -> list[ApiToken]:
    actor = guards.authenticated(actor)
    async with session.begin():
        rows = await session.scalars(
            select(ApiToken).where(ApiToken.user_id == actor.user_id).order_by(ApiToken.id)
        )
        return list(rows)


async def revoke_api_token(*, session: AsyncSession, actor: Actor | None, token_id: int) -> None:
    actor = guards.authenticated(actor)
    async with session.begin():
        token = await session.get(ApiToken, token_id)
        # Another user's token id is reported as missing, never revoked.
        if token is None or token.user_id != actor.user_id:
            raise NotFound("No such token.")
        if token.revoked_at is None:
            token.revoked_at = utcnow()


async def pending_doctors(
    *, session: AsyncSession, actor: Actor | None
) -> list[tuple[User, Doctor]]:
    guards.require_admin(actor)
    async with session.begin():
        rows = await session.execute(
            select(User, Doctor)
            .join(Doctor, Doctor.user_id == User.id)
            .where(Doctor.approved_at.is_(None), User.is_smoke.is_(False))
            .order_by(User.created_at)
        )
        return [(u, d) for u, d in rows.all()]


async def approve_doctor(*, session: AsyncSession, actor: Actor | None, doctor_id: int) -> None:
    admin = guards.require_admin(actor)
    async with session.begin():
        doctor = await session.get(Doctor, doctor_id)
        if doctor is None:
            raise NotFound("No such doctor.")
        if doctor.approved_at is None:
            doctor.approved_at = utcnow()
            doctor.approved_by = admin.user_id


async def _audit(
    session: AsyncSession,
    actor: Actor,
    patient_id: int,
    action: Literal["read", "create", "update"],
) -> None:
    await audit.record(
        session, actor=actor, patient_id=patient_id, action=action, subject="profile"
    )


async def patient_profile(
    *, session: AsyncSession, actor: Actor | None, patient_id: int
) -> tuple[User, Patient]:
    who = guards.ensure_may_see_patient(actor, patient_id)
    async with session.begin():
        row = (
            await session.execute(
                select(User, Patient)
                .join(Patient, Patient.user_id == User.id)
                .where(User.id == patient_id)
            )
        ).first()
        if row is None:
            raise NotFound("No such patient.")
        await _audit(session, who, patient_id, "read")
    return row[0], row[1]


async def update_patient(
    *, session: AsyncSession, actor: Actor | None, patient_id: int, data: PatientUpdate
) -> User:
    who = guards.ensure_may_see_patient(actor, patient_id)
    async with session.begin():
        user = await session.get(User, patient_id)
        if user is None or user.role != Role.PATIENT:
            raise NotFound("No such patient.")
        if data.name is not None:
            user.name = data.name
        if data.time_zone is not None:
            user.time_zone = data.time_zone
        await session.flush()
        await _audit(session, who, patient_id, "update")
    return user
