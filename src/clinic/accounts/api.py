"""JSON routes for accounts (thin: validation in, service call, shape out)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, status

from clinic.accounts import reset, review, review_pages, service, verification
from clinic.accounts.deps import CurrentActor
from clinic.accounts.models import ApiToken, User
from clinic.accounts.review import Decision
from clinic.accounts.schemas import (
    DoctorCreate,
    LockPublic,
    LoginRequest,
    PasswordChange,
    PatientCreate,
    PatientPublic,
    PatientUpdate,
    ResetConfirm,
    ResetRequest,
    TokenCreate,
    TokenCreated,
    TokenLogin,
    TokenPublic,
    UserPublic,
    VerifyEmail,
)
from clinic.core.config import Settings
from clinic.core.validation import Id
from clinic.web.deps import (
    Session,
    SettingsDep,
    bearer_token,
    client_address,
    csrf_token,
    log_in,
    log_out,
)
from clinic.web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["accounts"], responses=ERROR_RESPONSES)


def user_public(user: User) -> UserPublic:
    return UserPublic(
        id=user.id,
        name=user.name,
        email=user.email,
        role=user.role,
        time_zone=user.time_zone,
        email_verified=not user.email_verification_pending,
    )


def token_public(token: ApiToken, settings: Settings) -> TokenPublic:
    return TokenPublic(
        id=token.id,
        name=token.name,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        expires_at=service.token_expires_at(token, settings),
        revoked_at=token.revoked_at,
    )


def _lifetime(days: int | None) -> timedelta | None:
    return timedelta(days=days) if days is not None else None


@router.post("/patients", status_code=status.HTTP_201_CREATED)
async def register_patient(
    data: PatientCreate, request: Request, session: Session, settings: SettingsDep
) -> UserPublic:
    """Register as a patient; a link confirming the email address is emailed, and booking
    waits for it (403 ``email_not_verified`` until then)."""
    user = await service.register_patient(
        session=session, data=data, settings=settings, verify_at=str(request.base_url)
    )
    return user_public(user)


@router.post("/doctors", status_code=status.HTTP_201_CREATED)
async def register_doctor(
    data: DoctorCreate, session: Session, settings: SettingsDep
) -> UserPublic:
    """Register as a doctor; bookable once an admin approves."""
    user = await service.register_doctor(session=session, data=data, settings=settings)
    return user_public(user)


@router.post("/auth/login")
async def login(
    data: LoginRequest, request: Request, session: Session, settings: SettingsDep
) -> dict[str, object]:
    """Start a cookie session. Returns the CSRF token to send as X-CSRF-Token on changes."""
    user = await service.authenticate(
        session=session,
        email=data.email,
        password=data.password,
        address=client_address(request),
        settings=settings,
    )
    log_in(request, user.id, user.session_generation)
    return {"user": user_public(user), "csrf_token": csrf_token(request)}


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request) -> None:
    log_out(request)


@router.post("/auth/logout-everywhere", status_code=status.HTTP_204_NO_CONTENT)
async def logout_everywhere(request: Request, actor: CurrentActor, session: Session) -> None:
    """End every session of this user, on every device, this one included. API tokens are
    not sessions: revoke them with ``DELETE /tokens/{id}``."""
    await service.end_sessions(session=session, actor=actor)
    log_out(request)


@router.post("/auth/password")
async def change_password(
    data: PasswordChange,
    request: Request,
    actor: CurrentActor,
    session: Session,
    settings: SettingsDep,
) -> dict[str, object]:
    """Change the password; every other session ends. A cookie session goes on with a new
    CSRF token, returned here."""
    generation = await service.change_password(
        session=session,
        actor=actor,
        current_password=data.current_password,
        new_password=data.new_password,
        address=client_address(request),
        settings=settings,
    )
    if actor is not None and bearer_token(request) is None:
        log_in(request, actor.user_id, generation)
        return {"csrf_token": csrf_token(request)}
    return {}


@router.post("/auth/token", status_code=status.HTTP_201_CREATED)
async def token_login(
    data: TokenLogin, request: Request, session: Session, settings: SettingsDep
) -> TokenCreated:
    """Exchange credentials for a bearer token (same throttling as login)."""
    user = await service.authenticate(
        session=session,
        email=data.email,
        password=data.password,
        address=client_address(request),
        settings=settings,
    )
    actor = service.actor_of(user)
    token, raw = await service.create_api_token(
        session=session,
        actor=actor,
        name=data.name,
        settings=settings,
        lifetime=_lifetime(data.expires_in_days),
    )
    return TokenCreated(**token_public(token, settings).model_dump(), token=raw)


@router.get("/me")
async def me(actor: CurrentActor, session: Session) -> UserPublic:
    from clinic.accounts.guards import authenticated

    who = authenticated(actor)
    return UserPublic(
        id=who.user_id,
        name=who.name,
        email=who.email,
        role=who.role.value,
        time_zone=who.time_zone,
        email_verified=who.email_verified,
    )


@router.get("/tokens")
async def list_tokens(
    actor: CurrentActor, session: Session, settings: SettingsDep
) -> list[TokenPublic]:
    tokens = await service.list_api_tokens(session=session, actor=actor)
    return [token_public(t, settings) for t in tokens]


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(
    data: TokenCreate, actor: CurrentActor, session: Session, settings: SettingsDep
) -> TokenCreated:
    """A bearer token that expires after ``expires_in_days`` (default 90, bounded)."""
    token, raw = await service.create_api_token(
        session=session,
        actor=actor,
        name=data.name,
        settings=settings,
        lifetime=_lifetime(data.expires_in_days),
    )
    return TokenCreated(**token_public(token, settings).model_dump(), token=raw)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(token_id: Id, actor: CurrentActor, session: Session) -> None:
    await service.revoke_api_token(session=session, actor=actor, token_id=token_id)


@router.get("/patients/{patient_id}")
async def get_patient(patient_id: Id, actor: CurrentActor, session: Session) -> PatientPublic:
    user, patient = await service.patient_profile(
        session=session, actor=actor, patient_id=patient_id
    )
    return PatientPublic(**user_public(user).model_dump(), date_of_birth=patient.date_of_birth)


@router.patch("/patients/{patient_id}")
async def update_patient(
    patient_id: Id, data: PatientUpdate, actor: CurrentActor, session: Session
) -> UserPublic:
    user = await service.update_patient(
        session=session, actor=actor, patient_id=patient_id, data=data
    )
    return user_public(user)


@router.get("/admin/doctors/pending")
async def pending_doctors(actor: CurrentActor, session: Session) -> list[dict[str, object]]:
    rows = await service.pending_doctors(session=session, actor=actor)
    return [
        {
            "id": u.id,
            "name": u.name,
            "email": u.email,
            "specialty": d.specialty,
            "licence_number": d.licence_number,
            "registered_at": u.created_at,
        }
        for u, d in rows
    ]


@router.post("/admin/doctors/{doctor_id}/approve", status_code=status.HTTP_204_NO_CONTENT)
async def approve_doctor(
    doctor_id: Id, actor: CurrentActor, session: Session, settings: SettingsDep
) -> None:
    """Approve a sign-up, as ``POST /doctor-sign-ups/{id}/decision`` with ``approved`` does
    (recorded, and the doctor is emailed)."""
    await review.decide(
        session=session,
        actor=actor,
        doctor_id=doctor_id,
        decision=Decision.APPROVED,
        settings=settings,
    )


@router.get("/admin/lockouts")
async def lockouts(actor: CurrentActor, session: Session) -> list[LockPublic]:
    """Accounts refused login somewhere right now (per account and address)."""
    locks = await service.locked_accounts(session=session, actor=actor)
    return [
        LockPublic(user_id=k.user_id, email=k.email, address=k.address, locked_until=k.until)
        for k in locks
    ]


@router.post("/admin/users/{user_id}/unlock", status_code=status.HTTP_204_NO_CONTENT)
async def unlock_user(user_id: Id, actor: CurrentActor, session: Session) -> None:
    """Lift a user's login lockout, from every address."""
    await service.unlock_account(session=session, actor=actor, user_id=user_id)


router.include_router(review_pages.api)  # /api/v1/doctor-sign-ups (review.py)


@router.post("/auth/password-reset", status_code=status.HTTP_202_ACCEPTED)
async def request_password_reset(
    data: ResetRequest, request: Request, session: Session, settings: SettingsDep
) -> dict[str, str]:
    """Email a single-use reset link; the same answer whether or not the address is known."""
    await reset.request_reset(
        session=session, email=data.email, base_url=str(request.base_url), settings=settings
    )
    return {"detail": reset.SENT_MESSAGE}


@router.post("/auth/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT)
async def confirm_password_reset(
    data: ResetConfirm, session: Session, settings: SettingsDep
) -> None:
    """Set a new password with the emailed token; every session of the account ends."""
    await reset.complete_reset(
        session=session, token=data.token, new_password=data.new_password, settings=settings
    )


@router.post("/auth/verify-email", status_code=status.HTTP_204_NO_CONTENT)
async def verify_email(data: VerifyEmail, session: Session, settings: SettingsDep) -> None:
    """Confirm the email address with the token from the emailed link."""
    await verification.confirm(session=session, token=data.token, settings=settings)


@router.post("/auth/verify-email/resend", status_code=status.HTTP_202_ACCEPTED)
async def resend_verification(
    request: Request, actor: CurrentActor, session: Session, settings: SettingsDep
) -> dict[str, bool]:
    """Email the confirmation link again (``sent`` is false when already confirmed)."""
    sent = await verification.resend(
        session=session, actor=actor, base_url=str(request.base_url), settings=settings
    )
    return {"sent": sent}
