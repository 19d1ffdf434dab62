"""HTML pages for accounts: home, registration, login/logout, the security page, doctor
approval."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from clinic.accounts import reset, review, review_pages, service, verification
from clinic.accounts.deps import CurrentActor, PageActor, page_actor_back_to
from clinic.accounts.guards import Actor
from clinic.accounts.models import Role
from clinic.accounts.review import Decision
from clinic.accounts.schemas import (
    DoctorCreate,
    LoginRequest,
    PasswordChange,
    PatientCreate,
    ResetConfirm,
    ResetRequest,
)
from clinic.accounts.specialties import specialty_choices
from clinic.core.errors import ClinicError, TooManyAttempts
from clinic.core.validation import Id, zone_or_none
from clinic.web.deps import CsrfChecked, Session, SettingsDep, client_address, log_in, log_out
from clinic.web.pages import (
    clinic_errors,
    flash,
    page,
    raw,
    redirect,
    safe_next,
    text,
    validation_errors,
)

router = APIRouter(include_in_schema=False)

BackToDoctors = Annotated[Actor, page_actor_back_to("/admin/doctors")]
BackToAccount = Annotated[Actor, page_actor_back_to("/account")]
BackToLockouts = Annotated[Actor, page_actor_back_to("/admin/lockouts")]

COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Madrid",
    "Europe/Paris",
    "Europe/Amsterdam",
    "Europe/Berlin",
    "Europe/Zurich",
    "Europe/Rome",
    "Europe/Vienna",
    "Europe/Warsaw",
    "Europe/Stockholm",
    "Europe/Athens",
    "Europe/Helsinki",
    "Europe/Istanbul",
    "Europe/Kyiv",
    "Europe/Moscow",
    "Africa/Cairo",
    "Africa/Lagos",
    "Africa/Nairobi",
    "Africa/Johannesburg",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Bangkok",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Sao_Paulo",
    "America/Mexico_City",
    "America/New_York",
    "America/Toronto",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)


def role_home(actor: Actor) -> str:
    """The main page of the actor's role."""
    if actor.role is Role.DOCTOR:
        return "/agenda"
    if actor.role is Role.ADMIN:
        return "/admin/doctors"
    return "/appointments"


# ---------------------------------------------------------------- pages


@router.get("/")
async def home(request: Request, actor: CurrentActor) -> Response:
    """What the clinic is, and where to go next."""
    return page(request, "home.html", home_url=role_home(actor) if actor else None)


def _zone_of(form: FormData) -> str:
    """The zone typed in, else the one chosen, else the browser's (filled in by the page's
    script; ignored unless it names a real zone), else UTC."""
    chosen = text(form, "time_zone_other") or text(form, "time_zone")
    if chosen:
        return chosen
    browser = text(form, "browser_time_zone")
    return browser if zone_or_none(browser) is not None else "UTC"


def _register_context(form: FormData | None) -> dict[str, Any]:
    values = {k: text(form, k) for k in form if k not in ("password", "csrf_token")} if form else {}
    return {"values": values, "zones": COMMON_ZONES}


@router.get("/register")
async def register_form(request: Request, actor: CurrentActor) -> Response:
    return page(request, "accounts/register.html", doctor=False, **_register_context(None))


@router.get("/register/doctor")
async def register_doctor_form(request: Request, actor: CurrentActor, session: Session) -> Response:
    return page(
        request,
        "accounts/register.html",
        doctor=True,
        specialties=await specialty_choices(session=session),
        **_register_context(None),
    )


@router.post("/register", dependencies=[CsrfChecked])
async def register(
    request: Request, actor: CurrentActor, session: Session, settings: SettingsDep
) -> Response:
    """Create a patient account and log them in; they confirm their email address through
    the emailed link before their first booking."""
    form = await request.form()
    fields = {
        "name": text(form, "name"),
        "email": text(form, "email"),
        "password": raw(form, "password"),
        "date_of_birth": text(form, "date_of_birth"),
        "time_zone": _zone_of(form),
    }
    try:
        data = PatientCreate.model_validate(fields)
        user = await service.register_patient(
            session=session, data=data, settings=settings, verify_at=str(request.base_url)
        )
    except ValidationError as exc:
        errors = validation_errors(exc)
        return page(
            request,
            "accounts/register.html",
            422,
            doctor=False,
            errors=errors,
            **_register_context(form),
        )
    except ClinicError as exc:
        return page(
            request,
            "accounts/register.html",
            exc.status,
            doctor=False,
            errors=clinic_errors(exc),
            **_register_context(form),
        )
    log_in(request, user.id, user.session_generation)
    flash(
        request,
        f"Welcome, {user.name}! We sent a link to {user.email}: open it to confirm your "
        "address, then book your first appointment.",
    )
    return redirect("/doctors")


@router.post("/register/doctor", dependencies=[CsrfChecked])
async def register_doctor(
    request: Request, actor: CurrentActor, session: Session, settings: SettingsDep
) -> Response:
    """Create a doctor account awaiting an admin's approval."""
    form = await request.form()
    fields = {
        "name": text(form, "name"),
        "email": text(form, "email"),
        "password": raw(form, "password"),
        "time_zone": _zone_of(form),
        "specialty": text(form, "specialty"),
        "licence_number": text(form, "licence_number"),
        "bio": text(form, "bio"),
    }
    try:
        data = DoctorCreate.model_validate(fields)
        await service.register_doctor(session=session, data=data, settings=settings)
    except ValidationError as exc:
        return page(
            request,
            "accounts/register.html",
            422,
            doctor=True,
            specialties=await specialty_choices(session=session),
            errors=validation_errors(exc),
            **_register_context(form),
        )
    except ClinicError as exc:
        return page(
            request,
            "accounts/register.html",
            exc.status,
            doctor=True,
            specialties=await specialty_choices(session=session),
            errors=clinic_errors(exc),
            **_register_context(form),
        )
    flash(
        request,
        "Thank you for registering. An administrator must approve your account before "
        "patients can book you; you can log in and set your hours meanwhile.",
    )
    return redirect("/login")


@router.get("/login")
async def login_form(request: Request, actor: CurrentActor) -> Response:
    nxt = safe_next(request.query_params.get("next"))
    return page(request, "accounts/login.html", next=nxt or "", values={})


@router.post("/login", dependencies=[CsrfChecked])
async def login(request: Request, session: Session, settings: SettingsDep) -> Response:
    """Check credentials (throttled by the service) and start a session."""
    form = await request.form()
    email = text(form, "email")
    nxt = safe_next(text(form, "next"))
    context: dict[str, Any] = {"next": nxt or "", "values": {"email": email}}
    try:
        data = LoginRequest.model_validate({"email": email, "password": raw(form, "password")})
        user = await service.authenticate(
            session=session,
            email=data.email,
            password=data.password,
            address=client_address(request),
            settings=settings,
        )
    except ValidationError as exc:
        return page(request, "accounts/login.html", 422, errors=validation_errors(exc), **context)
    except ClinicError as exc:
        response = page(
            request, "accounts/login.html", exc.status, errors={"form": exc.message}, **context
        )
        if isinstance(exc, TooManyAttempts):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    log_in(request, user.id, user.session_generation)
    return redirect(nxt or role_home(service.actor_of(user)))


@router.post("/logout", dependencies=[CsrfChecked])
async def logout(request: Request) -> Response:
    log_out(request)
    flash(request, "You are logged out.")
    return redirect("/")


@router.get("/account")
async def account(request: Request, actor: PageActor) -> Response:
    """The user's security page: confirm the email address, change the password, log out
    everywhere."""
    return page(request, "accounts/account.html")


@router.post("/account/verify-email", dependencies=[CsrfChecked])
async def resend_verification(
    request: Request, actor: BackToAccount, session: Session, settings: SettingsDep
) -> Response:
    sent = await verification.resend(
        session=session, actor=actor, base_url=str(request.base_url), settings=settings
    )
    flash(
        request,
        f"We sent a new link to {actor.email}." if sent else "Your address is confirmed already.",
    )
    return redirect("/account")


@router.get("/verify-email")
async def verify_email(request: Request, session: Session, settings: SettingsDep) -> Response:
    """The emailed link: confirms the address, then on to booking."""
    try:
        await verification.confirm(
            session=session, token=request.query_params.get("token", ""), settings=settings
        )
    except ClinicError as exc:
        return page(request, "accounts/verify_email.html", exc.status, message=exc.message)
    flash(request, "Your email address is confirmed. You can book appointments now.")
    return redirect("/doctors")


@router.post("/account/password", dependencies=[CsrfChecked])
async def change_password(
    request: Request, actor: BackToAccount, session: Session, settings: SettingsDep
) -> Response:
    """Set a new password; every other session ends, this one goes on."""
    form = await request.form()
    try:
        data = PasswordChange.model_validate(
            {
                "current_password": raw(form, "current_password"),
                "new_password": raw(form, "new_password"),
            }
        )
        generation = await service.change_password(
            session=session,
            actor=actor,
            current_password=data.current_password,
            new_password=data.new_password,
            address=client_address(request),
            settings=settings,
        )
    except ValidationError as exc:
        return page(request, "accounts/account.html", 422, errors=validation_errors(exc))
    except ClinicError as exc:
        errors = clinic_errors(exc, default="new_password")
        return page(request, "accounts/account.html", exc.status, errors=errors)
    log_in(request, actor.user_id, generation)
    flash(request, "Your password is changed. Every other session is logged out.")
    return redirect("/account")


@router.post("/logout/everywhere", dependencies=[CsrfChecked])
async def logout_everywhere(request: Request, actor: BackToAccount, session: Session) -> Response:
    """End every session of this user, this one included."""
    await service.end_sessions(session=session, actor=actor)
    log_out(request)
    flash(request, "You are logged out on every device.")
    return redirect("/login")


@router.get("/admin/doctors")
async def pending_doctors(request: Request, actor: PageActor, session: Session) -> Response:
    """Doctors waiting for approval (admins only: the service decides)."""
    rows = await service.pending_doctors(session=session, actor=actor)
    return page(request, "accounts/pending_doctors.html", pending=rows)


@router.post("/admin/doctors/{doctor_id}/approve", dependencies=[CsrfChecked])
async def approve_doctor(
    doctor_id: Id, request: Request, actor: BackToDoctors, session: Session, settings: SettingsDep
) -> Response:
    """Approve a sign-up as the sign-up review does (recorded, and the doctor is emailed)."""
    await review.decide(
        session=session,
        actor=actor,
        doctor_id=doctor_id,
        decision=Decision.APPROVED,
        settings=settings,
    )
    flash(request, "The doctor is approved and can now be booked; we emailed them.")
    return redirect("/admin/doctors")


@router.get("/admin/lockouts")
async def lockouts(request: Request, actor: PageActor, session: Session) -> Response:
    """Accounts locked out of login right now, each with an unlock button (admins only)."""
    locks = await service.locked_accounts(session=session, actor=actor)
    return page(request, "accounts/lockouts.html", locks=locks)


@router.post("/admin/users/{user_id}/unlock", dependencies=[CsrfChecked])
async def unlock_user(
    user_id: Id, request: Request, actor: BackToLockouts, session: Session
) -> Response:
    await service.unlock_account(session=session, actor=actor, user_id=user_id)
    flash(request, "The account is unlocked; its owner can log in again.")
    return redirect("/admin/lockouts")


router.include_router(review_pages.pages)  # doctor sign-ups: approve, reject, ask (review.py)


@router.get("/password-reset")
async def password_reset_form(request: Request, actor: CurrentActor) -> Response:
    return page(request, "accounts/password_reset.html", values={})


@router.post("/password-reset", dependencies=[CsrfChecked])
async def password_reset(request: Request, session: Session, settings: SettingsDep) -> Response:
    """Email a reset link if the address has an account; the same answer either way."""
    form = await request.form()
    try:
        data = ResetRequest.model_validate({"email": text(form, "email")})
    except ValidationError as exc:
        return page(
            request, "accounts/password_reset.html", 422, errors=validation_errors(exc), values={}
        )
    await reset.request_reset(
        session=session, email=data.email, base_url=str(request.base_url), settings=settings
    )
    flash(request, reset.SENT_MESSAGE)
    return redirect("/login")


@router.get("/password-reset/confirm")
async def password_reset_confirm_form(request: Request, actor: CurrentActor) -> Response:
    token = request.query_params.get("token", "")
    return page(request, "accounts/password_reset_confirm.html", token=token)


@router.post("/password-reset/confirm", dependencies=[CsrfChecked])
async def password_reset_confirm(
    request: Request, session: Session, settings: SettingsDep
) -> Response:
    """Set the new password; the visitor then logs in with it (every old session ended)."""
    form = await request.form()
    token = raw(form, "token")
    try:
        data = ResetConfirm.model_validate(
            {"token": token, "new_password": raw(form, "new_password")}
        )
        await reset.complete_reset(
            session=session, token=data.token, new_password=data.new_password, settings=settings
        )
    except ValidationError as exc:
        errors = validation_errors(exc)
        return page(
            request, "accounts/password_reset_confirm.html", 422, errors=errors, token=token
        )
    except ClinicError as exc:
        errors = clinic_errors(exc, default="new_password")
        return page(
            request, "accounts/password_reset_confirm.html", exc.status, errors=errors, token=token
        )
    log_out(request)
    flash(request, "Your password is changed. Log in with the new one.")
    return redirect("/login")
