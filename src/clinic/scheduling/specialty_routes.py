"""The managed specialty list over HTTP: a JSON API (anyone reads, admins edit) and the
admin's page. Thin: :mod:`clinic.accounts.specialties` decides."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from clinic.accounts import specialties as service
from clinic.accounts.deps import CurrentActor, PageActor, page_actor_back_to
from clinic.accounts.guards import Actor, require_admin
from clinic.core.errors import ClinicError
from clinic.core.validation import Id, Text
from clinic.web.deps import CsrfChecked, Session
from clinic.web.errors import ERROR_RESPONSES
from clinic.web.pages import flash, page, redirect, text


class SpecialtyIn(BaseModel):
    name: Text = Field(max_length=200)


class SpecialtyPublic(BaseModel):
    id: int
    name: str
    doctors: int


def _public(view: service.SpecialtyView) -> SpecialtyPublic:
    return SpecialtyPublic(id=view.id, name=view.name, doctors=view.doctors)


api = APIRouter(prefix="/api/v1/specialties", tags=["specialties"], responses=ERROR_RESPONSES)


@api.get("")
async def list_specialties(session: Session) -> list[SpecialtyPublic]:
    """The list doctors register with and patients search by."""
    return [_public(v) for v in await service.list_specialties(session=session)]


@api.post("", status_code=status.HTTP_201_CREATED)
async def add_specialty(
    data: SpecialtyIn, actor: CurrentActor, session: Session
) -> SpecialtyPublic:
    return _public(await service.add_specialty(session=session, actor=actor, name=data.name))


@api.patch("/{specialty_id}")
async def rename_specialty(
    specialty_id: Id, data: SpecialtyIn, actor: CurrentActor, session: Session
) -> SpecialtyPublic:
    view = await service.rename_specialty(
        session=session, actor=actor, specialty_id=specialty_id, name=data.name
    )
    return _public(view)


@api.delete("/{specialty_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_specialty(specialty_id: Id, actor: CurrentActor, session: Session) -> None:
    await service.remove_specialty(session=session, actor=actor, specialty_id=specialty_id)


pages = APIRouter(include_in_schema=False)

BackToList = Annotated[Actor, page_actor_back_to("/admin/specialties")]


async def _list_page(
    request: Request,
    session: Session,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    rows = await service.list_specialties(session=session)
    return page(
        request,
        "scheduling/specialties.html",
        status_code,
        specialties=rows,
        errors=errors or {},
        values=values or {},
    )


@pages.get("/admin/specialties")
async def specialties_page(request: Request, actor: PageActor, session: Session) -> Response:
    """The admin's list: add, rename, remove."""
    require_admin(actor)
    return await _list_page(request, session)


async def _edit(
    request: Request, session: Session, key: str, done: str, action: Awaitable[object]
) -> Response:
    """Run one edit; a refusal comes back on the list, next to the field it concerns."""
    form = await request.form()
    try:
        await action
    except ClinicError as exc:
        if exc.status in (401, 403, 404):
            raise
        return await _list_page(
            request,
            session,
            exc.status,
            errors={key: exc.message},
            values={key: text(form, "name")},
        )
    flash(request, done)
    return redirect("/admin/specialties")


@pages.post("/admin/specialties", dependencies=[CsrfChecked])
async def add_page(request: Request, actor: BackToList, session: Session) -> Response:
    name = text(await request.form(), "name")
    action = service.add_specialty(session=session, actor=actor, name=name)
    return await _edit(request, session, "name", f"{name} is on the list.", action)


@pages.post("/admin/specialties/{specialty_id}/rename", dependencies=[CsrfChecked])
async def rename_page(
    specialty_id: Id, request: Request, actor: BackToList, session: Session
) -> Response:
    name = text(await request.form(), "name")
    action = service.rename_specialty(
        session=session, actor=actor, specialty_id=specialty_id, name=name
    )
    return await _edit(
        request, session, f"name-{specialty_id}", "The specialty is renamed.", action
    )


@pages.post("/admin/specialties/{specialty_id}/remove", dependencies=[CsrfChecked])
async def remove_page(
    specialty_id: Id, request: Request, actor: BackToList, session: Session
) -> Response:
    action = service.remove_specialty(session=session, actor=actor, specialty_id=specialty_id)
    return await _edit(
        request, session, f"name-{specialty_id}", "The specialty is removed.", action
    )
