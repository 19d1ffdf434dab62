"""HTML pages for the audit trail: ``/me/audit`` for patients, ``/admin/audit`` for admins."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from clinic.accounts.deps import PageActor
from clinic.audit import service
from clinic.core.errors import InvalidInput
from clinic.core.validation import PageDay, PageId, Text
from clinic.web.deps import Session
from clinic.web.pages import page
from clinic.web.render import viewer_zone

router = APIRouter(include_in_schema=False)


def _int(value: str | None, field: str) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput("Enter a number.", field=field) from None


def _day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("Enter a date as YYYY-MM-DD.", field=field) from None


@router.get("/me/audit")
async def mine(request: Request, actor: PageActor, session: Session) -> Response:
    entries = await service.accesses_to_me(session=session, actor=actor)
    return page(request, "audit/mine.html", entries=entries)


@router.get("/admin/audit")
async def search(
    request: Request,
    actor: PageActor,
    session: Session,
    patient_id: Annotated[PageId, Query()] = None,
    actor_id: Annotated[PageId, Query()] = None,
    since_param: Annotated[PageDay, Query(alias="since")] = None,
    until_param: Annotated[PageDay, Query(alias="until")] = None,
    patient_name: Annotated[Text | None, Query(max_length=service.NAME_MAX)] = None,
    staff_name: Annotated[Text | None, Query(max_length=service.NAME_MAX)] = None,
) -> Response:
    """The trail in words, searched by patient or staff (part of the name, or id) and days."""
    q = request.query_params
    zone = viewer_zone(request)
    since_day, until_day = _day(q.get("since"), "since"), _day(q.get("until"), "until")
    # Dates are the viewer's days; the range includes the whole ``until`` day.
    since = datetime.combine(since_day, time(), tzinfo=zone).astimezone(UTC) if since_day else None
    until = (
        datetime.combine(until_day + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
        if until_day
        else None
    )
    filters = service.AuditFilter(
        patient_id=_int(q.get("patient_id"), "patient_id"),
        actor_id=_int(q.get("actor_id"), "actor_id"),
        patient_name=q.get("patient_name"),
        staff_name=q.get("staff_name"),
        since=since,
        until=until,
    )
    entries = await service.search(session=session, actor=actor, filters=filters)
    return page(request, "audit/search.html", entries=entries, query=dict(q))
