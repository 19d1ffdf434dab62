"""Doctor sign-ups over HTTP: the admin's page (approve, reject with a reason, ask for
information) and the same decisions as JSON. Thin: :mod:`clinic.accounts.review` decides."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from clinic.accounts import review
from clinic.accounts.deps import CurrentActor, PageActor, page_actor_back_to
from clinic.accounts.guards import Actor
from clinic.core.errors import ClinicError, NotFound
from clinic.core.validation import Id, Text
from clinic.web.deps import CsrfChecked, Session, SettingsDep
from clinic.web.errors import ERROR_RESPONSES
from clinic.web.pages import flash, page, redirect, text

LIST = "/admin/sign-ups"
DONE = {
    review.Decision.APPROVED: "{name} is approved and can now be booked; the email is on its way.",
    review.Decision.REJECTED: "{name} is rejected; the email with your reason is on its way.",
    review.Decision.INFO_REQUESTED: "{name} is asked for information; the email is on its way.",
}
ACTIONS = {
    "approve": review.Decision.APPROVED,
    "reject": review.Decision.REJECTED,
    "ask": review.Decision.INFO_REQUESTED,
}


class DecisionIn(BaseModel):
    decision: review.Decision
    message: Text = Field(default="", max_length=review.MESSAGE_MAX)


class SignUpPublic(BaseModel):
    doctor_id: int
    name: str
    email: str
    specialty: str
    licence_number: str
    registered_at: datetime
    state: str
    """new, info_requested or rejected (approved doctors leave the list)."""
    last_message: str | None


class ReviewPublic(BaseModel):
    id: int
    doctor_id: int
    decision: str
    message: str
    at: datetime


api = APIRouter(prefix="/doctor-sign-ups", tags=["accounts"], responses=ERROR_RESPONSES)


@api.get("")
async def sign_ups(actor: CurrentActor, session: Session) -> list[SignUpPublic]:
    """Doctors awaiting a decision (admins)."""
    return [
        SignUpPublic(
            doctor_id=s.user.id,
            name=s.user.name,
            email=s.user.email,
            specialty=s.doctor.specialty,
            licence_number=s.doctor.licence_number,
            registered_at=s.user.created_at,
            state=s.state,
            last_message=s.last.message if s.last is not None else None,
        )
        for s in await review.sign_ups(session=session, actor=actor)
    ]


@api.post("/{doctor_id}/decision")
async def decide(
    doctor_id: Id, data: DecisionIn, actor: CurrentActor, session: Session, settings: SettingsDep
) -> ReviewPublic:
    """Approve, reject (``message``: the reason) or ask for information (``message``: what)."""
    r = await review.decide(
        session=session,
        actor=actor,
        doctor_id=doctor_id,
        decision=data.decision,
        message=data.message,
        settings=settings,
    )
    return ReviewPublic(
        id=r.id, doctor_id=r.doctor_id, decision=r.decision, message=r.message, at=r.at
    )


pages = APIRouter(include_in_schema=False)

BackToList = Annotated[Actor, page_actor_back_to(LIST)]


async def _list_page(
    request: Request,
    actor: Actor,
    session: Session,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    rows = await review.sign_ups(session=session, actor=actor)
    return page(
        request,
        "accounts/review.html",
        status_code,
        sign_ups=rows,
        errors=errors or {},
        values=values or {},
    )


@pages.get(LIST)
async def sign_ups_page(request: Request, actor: PageActor, session: Session) -> Response:
    """Doctor sign-ups with the three decisions (admins only: the service decides)."""
    return await _list_page(request, actor, session)


@pages.post(LIST + "/{doctor_id}/{action}", dependencies=[CsrfChecked])
async def decide_page(
    doctor_id: Id,
    action: str,
    request: Request,
    actor: BackToList,
    session: Session,
    settings: SettingsDep,
) -> Response:
    decision = ACTIONS.get(action)
    if decision is None:
        raise NotFound("No such decision.")
    message = text(await request.form(), "message")
    try:
        r = await review.decide(
            session=session,
            actor=actor,
            doctor_id=doctor_id,
            decision=decision,
            message=message,
            settings=settings,
        )
    except ClinicError as exc:
        if exc.status in (401, 403, 404):
            raise
        key = f"{action}-{doctor_id}"
        return await _list_page(
            request, actor, session, exc.status, errors={key: exc.message}, values={key: message}
        )
    name = await review.doctor_name(session=session, doctor_id=r.doctor_id)
    flash(request, DONE[decision].format(name=name))
    return redirect(LIST)
