"""Admin pages: the outbox (mail kept when no SMTP server is configured) and failed jobs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from clinic.accounts.deps import PageActor
from clinic.notify import service
from clinic.web.deps import Session
from clinic.web.pages import page

router = APIRouter(include_in_schema=False)


@router.get("/admin/outbox")
async def outbox(request: Request, actor: PageActor, session: Session) -> Response:
    messages = await service.outbox(session=session, actor=actor)
    return page(request, "notify/outbox.html", messages=messages)


@router.get("/admin/jobs")
async def failed_jobs(request: Request, actor: PageActor, session: Session) -> Response:
    status = request.query_params.get("status", "failed")
    rows = await service.jobs_by_status(session=session, actor=actor, status=status)
    return page(request, "notify/jobs.html", jobs=rows, status=status)
