"""Jinja2 templates and the filters that show times in the viewer's zone."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from clinic.web.deps import csrf_token

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def viewer_zone(request: Request) -> ZoneInfo:
    """The viewer's zone: the logged-in user's, else ``?tz=``, else UTC."""
    actor = getattr(request.state, "actor", None)
    name = actor.time_zone if actor is not None else request.query_params.get("tz", "UTC")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _local(value: datetime, zone: ZoneInfo | str, fmt: str = "%a %d %b %Y, %H:%M") -> str:
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    return value.astimezone(tz).strftime(fmt)


TEMPLATES.env.filters["local"] = _local
TEMPLATES.env.globals["weekdays"] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with what every page needs: the actor, the CSRF token, the viewer's zone."""
    context.setdefault("errors", {})
    context.setdefault("message", None)
    context.update(
        actor=getattr(request.state, "actor", None),
        csrf_token=csrf_token(request),
        zone=viewer_zone(request),
    )
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
