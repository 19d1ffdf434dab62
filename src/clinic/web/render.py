"""Jinja2 templates and the filters that show times in the viewer's zone."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from clinic.core.errors import InvalidInput
from clinic.core.validation import zone_or_none
from clinic.core.wallclock import local_text
from clinic.web.deps import csrf_token

UTC_ZONE = ZoneInfo("UTC")

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def viewer_zone(request: Request) -> ZoneInfo:
    """The viewer's zone: the logged-in user's, else ``?tz=``, else UTC.

    A ``?tz=`` that names no IANA zone (``Europe``, ``localtime``, ``../x``) is refused with
    a 422 rather than guessed at.
    """
    actor = getattr(request.state, "actor", None)
    if actor is not None:
        return zone_or_none(actor.time_zone) or UTC_ZONE
    name = request.query_params.get("tz")
    if name is None or name == "":
        return UTC_ZONE
    zone = zone_or_none(name)
    if zone is None:
        raise InvalidInput(f"tz: unknown IANA time zone {name[:64]!r}", field="tz")
    return zone


def viewer_zone_or_utc(request: Request) -> ZoneInfo:
    """:func:`viewer_zone`, with UTC instead of a refusal (for error pages)."""
    try:
        return viewer_zone(request)
    except InvalidInput:
        return UTC_ZONE


TEMPLATES.env.filters["local"] = local_text
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
    context.setdefault("zone", None)
    context.update(
        actor=getattr(request.state, "actor", None),
        csrf_token=csrf_token(request),
        zone=context["zone"] or viewer_zone(request),
    )
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
