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
from clinic.web.identity import identity_of

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


GENERAL_ERROR_KEYS = frozenset({"form", "cancel", "reschedule", "weekly", "override", "request"})
"""Error keys about a whole form rather than one field: not in the field summary."""

FIELD_NAMES = {
    "starts_at": "Time",
    "date_of_birth": "Date of birth",
    "time_zone": "Time zone",
    "licence_number": "Licence number",
    "slot_minutes": "Slot length",
    "buffer_minutes": "Break between appointments",
    "min_notice_minutes": "Minimum notice",
}
"""Field names as the form's labels say them, where the key does not read as one."""


def errors_in(errors: dict[str, str], keys: list[str] | None = None) -> list[tuple[str, str, str]]:
    """``(key, field name, message)`` of each field's error, for the form's error summary
    (errors about the whole form are shown where the form puts them); ``keys`` limits it to
    one form's fields on a page with several forms."""
    return [
        (key, FIELD_NAMES.get(key, key.replace("_", " ").replace(".", " ").capitalize()), message)
        for key, message in errors.items()
        if key not in GENERAL_ERROR_KEYS and (keys is None or key in keys)
    ]


TEMPLATES.env.globals["errors_in"] = errors_in


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with what every page needs: the actor, the CSRF token, the viewer's zone,
    the clinic's identity (footer, contact)."""
    context.setdefault("errors", {})
    context.setdefault("message", None)
    context.setdefault("zone", None)
    context.update(
        actor=getattr(request.state, "actor", None),
        csrf_token=csrf_token(request),
        zone=context["zone"] or viewer_zone(request),
        clinic=identity_of(request),
    )
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
