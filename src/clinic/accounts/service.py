"""Account use cases: register, log in (throttled), approve doctors, API tokens, profiles."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts import guards, lockout, verification
from clinic.accounts.guards import Actor
from clinic.accounts.models import ApiToken, Doctor, Patient, Role, User
from clinic.accounts.schemas import DoctorCreate, PatientCreate, PatientUpdate
from clinic.accounts.specialties import canonical_specialty
from clinic.core import audit, request_context
from clinic.core.config import Settings
from clinic.core.db import utcnow
from clinic.core.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    NotFound,
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
        email_verified=not user.email_verification_pending,
    )


def _check_password(settings: Settings, password: str, email: str, field: str = "password") -> None:
    problem = password_problem(password, min_length=settings.password_min_length, email=email)
    if problem:
        raise InvalidInput(problem, field=field)


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
    *,
    session: AsyncSession,
    data: PatientCreate,
    settings: Settings,
    is_smoke: bool = False,
    verify_at: str | None = None,
) -> User:
    """A new patient. With ``verify_at`` (the clinic's base URL, for self-registration) the
    email address must be confirmed through an emailed link before the first booking."""
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
        if verify_at is not None:
            user.email_verification_pending = True
            await verification.send_link(session, user=user, base_url=verify_at, settings=settings)
        await _audit(session, actor_of(user), user.id, "create")
    return user


async def register_doctor(
    *,
    session: AsyncSession,
    data: DoctorCreate,
    settings: Settings,
    is_smoke: bool = False,
    approved: bool = False,
    listed: bool = True,
) -> User:
    """A doctor registers themself; they cannot be booked until an admin approves them.

    ``listed``: the specialty must be on the managed list (and takes its spelling). Seed
    data, written by this code, is not checked: the deploy rehearsal seeds it through the live
    release onto the live schema, which may be older than the list."""
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
        checked = listed and not is_smoke
        specialty = (
            await canonical_specialty(session, data.specialty) if checked else data.specialty
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


async def authenticate(
    *, session: AsyncSession, email: str, password: str, address: str, settings: Settings
) -> User:
    """Check credentials, throttled per account and address and per address
    (``clinic.accounts.lockout``): refused with 429 while locked, slowed down before."""
    email = normalise_email(email)
    now = utcnow()
    async with session.begin():
        is_smoke = await session.scalar(select(User.is_smoke).where(User.email == email))
    keys = lockout.keys_for(email, address, is_smoke=bool(is_smoke))
    await lockout.check(session, keys, now, settings)

    async with session.begin():
        user = await session.scalar(select(User).where(User.email == email))
        known = user.password_hash if user else None
        ok = await asyncio.to_thread(verify_password, known, password)
        if ok and user is not None:
            await lockout.succeeded(session, keys)
            return user
        await lockout.record_failure(session, keys, now, settings)
    raise InvalidCredentials("Email or password is wrong.")


async def locked_accounts(*, session: AsyncSession, actor: Actor | None) -> list[lockout.Lock]:
    guards.require_admin(actor)
    async with session.begin():
        return await lockout.locked_accounts(session, utcnow())


async def unlock_account(*, session: AsyncSession, actor: Actor | None, user_id: int) -> None:
    """An admin lifts the login lockout of a user, from every address."""
    guards.require_admin(actor)
    async with session.begin():
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound("No such user.")
        await lockout.unlock(session, user.email)


async def load_actor(*, session: AsyncSession, user_id: int, generation: int = 0) -> Actor | None:
    """The user of a session cookie; None when the user is gone or the session belongs to an
    older ``session_generation`` (ended by "log out everywhere" or a password change)."""
    async with session.begin():
        row = (
            await session.execute(
                select(User, Doctor)
                .outerjoin(Doctor, Doctor.user_id == User.id)
                .where(User.id == user_id, User.session_generation == generation)
            )
        ).first()
    if row is None:
        return None
    return actor_of(row[0], row[1])


async def actor_for_token(*, session: AsyncSession, token: str, settings: Settings) -> Actor | None:
    """The user of a bearer token that is neither revoked nor expired."""
    digest = token_digest(token)
    now = utcnow()
    async with session.begin():
        row = (
            await session.execute(
                select(User, Doctor, ApiToken)
                .join(ApiToken, ApiToken.user_id == User.id)
                .outerjoin(Doctor, Doctor.user_id == User.id)
                .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
            )
        ).first()
        if row is None or token_expires_at(row[2], settings) <= now:
            return None
        if not request_context.current().shadow:  # a mirrored read is not a use
            row[2].last_used_at = now
    return actor_of(row[0], row[1])


def token_expires_at(token: ApiToken, settings: Settings) -> datetime:
    """When ``token`` stops working (one made before expiry existed: its default lifetime)."""
    return token.expires_at or token.created_at + settings.api_token_ttl


async def end_sessions(*, session: AsyncSession, actor: Actor | None) -> int:
    """Log the user out everywhere: every session cookie issued so far stops working.
    Returns the new generation (a session started with it is valid)."""
    actor = guards.authenticated(actor)
    async with session.begin():
        generation = await _next_generation(session, actor.user_id)
    return generation


async def _next_generation(session: AsyncSession, user_id: int) -> int:
    generation = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(session_generation=User.session_generation + 1)
        .returning(User.session_generation)
    )
    if generation is None:
        raise NotFound("No such user.")
    return int(generation)


async def change_password(
    *,
    session: AsyncSession,
    actor: Actor | None,
    current_password: str,
    new_password: str,
    address: str,
    settings: Settings,
) -> int:
    """Set a new password after checking the current one; every session but the caller's
    (which the caller restarts with the returned generation) ends. Wrong current passwords
    count towards the login lockout (``clinic.accounts.lockout``): a stolen session cannot
    guess its way to the password."""
    actor = guards.authenticated(actor)
    _check_password(settings, new_password, actor.email, "new_password")
    now = utcnow()
    keys = lockout.keys_for(actor.email, address, is_smoke=actor.is_smoke)
    await lockout.check(session, keys, now, settings, attempts="wrong passwords")
    new_hash = await asyncio.to_thread(hash_password, new_password)
    async with session.begin():
        user = await session.get(User, actor.user_id, with_for_update=True)
        if user is None:
            raise NotFound("No such user.")
        ok = await asyncio.to_thread(verify_password, user.password_hash, current_password)
        if ok:
            user.password_hash = new_hash
            await lockout.succeeded(session, keys)
            return await _next_generation(session, user.id)
        await lockout.record_failure(session, keys, now, settings)
    raise InvalidInput("The current password is wrong.", field="current_password")


async def create_api_token(
    *,
    session: AsyncSession,
    actor: Actor | None,
    name: str,
    settings: Settings,
    lifetime: timedelta | None = None,
) -> tuple[ApiToken, str]:
    """A new bearer token, shown once; it expires after ``lifetime`` (default
    ``api_token_ttl``, at most ``api_token_max_ttl``)."""
    actor = guards.authenticated(actor)
    lifetime = lifetime or settings.api_token_ttl
    if lifetime > settings.api_token_max_ttl:
        raise InvalidInput(
            f"A token may live at most {settings.api_token_max_ttl.days} days.",
            field="expires_in_days",
        )
    raw = "clk_" + new_token()
    async with session.begin():
        token = ApiToken(
            user_id=actor.user_id,
            name=name,
            token_hash=token_digest(raw),
            expires_at=utcnow() + lifetime,
        )
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
