"""The page toolkit every feature's HTML routes share: render with the flash message,
POST-redirect-GET, the login redirect, reading form fields and turning errors into
``{field: message}`` for the form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from clinic.core.errors import ClinicError
from clinic.web.render import render

FLASH = "flash"


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """Render ``template``; shows (and clears) the flash message left by the last POST."""
    flashed = request.session.pop(FLASH, None)
    context.setdefault("message", flashed if isinstance(flashed, str) else None)
    return render(request, template, status_code=status_code, **context)


def flash(request: Request, message: str) -> None:
    request.session[FLASH] = message


def redirect(url: str) -> RedirectResponse:
    """POST-redirect-GET: 303 so the browser follows with a GET."""
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a path on this site, else None (no open redirects)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(c in value for c in "\r\n\\"):
        return None
    return value


def this_page(request: Request) -> str:
    """The path and query of the current request."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def login_redirect(request: Request, path: str | None = None) -> RedirectResponse:
    """Send an anonymous visitor to log in, coming back to ``path`` (default: this page)."""
    return redirect("/login?" + urlencode({"next": path or this_page(request)}))


class LoginRequired(Exception):
    """Raised by a page dependency for an anonymous visitor; answered with the login
    redirect, coming back to ``back`` (default: the page asked for)."""

    def __init__(self, back: str | None = None) -> None:
        super().__init__("login required")
        self.back = back


def text(form: FormData, name: str) -> str:
    """A form field as text ('' when missing or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def raw(form: FormData, name: str) -> str:
    """A form field exactly as sent (passwords are not stripped)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


_PLAIN: dict[str, str] = {
    "missing": "Please fill this in.",
    "string_type": "Please fill this in.",
    "int_parsing": "Enter a whole number, like 30.",
    "int_type": "Enter a whole number, like 30.",
    "int_from_float": "Enter a whole number, like 30.",
    "float_parsing": "Enter a number, like 1.5.",
    "bool_parsing": "Choose yes or no.",
    "date_parsing": "Enter a date, like 2026-03-14.",
    "date_type": "Enter a date, like 2026-03-14.",
    "date_from_datetime_parsing": "Enter a date, like 2026-03-14.",
    "date_from_datetime_inexact": "Enter a date without a time, like 2026-03-14.",
    "datetime_parsing": "Choose a date and a time.",
    "datetime_type": "Choose a date and a time.",
    "datetime_from_date_parsing": "Choose a date and a time.",
    "timezone_aware": "Choose a date and a time.",
    "time_parsing": "Enter a time, like 09:30.",
    "time_type": "Enter a time, like 09:30.",
    "literal_error": "Choose one of the options.",
    "enum": "Choose one of the options.",
    "url_parsing": "Enter a web address, like https://example.org.",
    "string_pattern_mismatch": "Please check this value.",
}


def plain_message(err: Mapping[str, Any]) -> str:
    """One pydantic error in words a patient understands (never "Input should be a valid
    date or datetime, input is too short"); a validator's own message is kept."""
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing" or value == "" or value is None:
        return "Please fill this in."
    if kind == "string_too_short":
        return f"Use at least {ctx.get('min_length', 1)} characters."
    if kind == "string_too_long":
        return f"Use at most {ctx.get('max_length')} characters."
    if kind in ("greater_than", "greater_than_equal"):
        word = "more than" if kind == "greater_than" else "at least"
        return f"Enter a number {word} {ctx.get('gt', ctx.get('ge'))}."
    if kind in ("less_than", "less_than_equal"):
        word = "less than" if kind == "less_than" else "at most"
        return f"Enter a number {word} {ctx.get('lt', ctx.get('le'))}."
    if kind in _PLAIN:
        return _PLAIN[kind]
    message = (
        str(err.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    )
    if "valid email" in message:
        return "Enter an email address, like name@example.org."
    if not message or message.startswith("Input should"):
        return "Please check this value."
    return message[:1].upper() + message[1:]


def validation_errors(
    exc: ValidationError, rename: dict[str, str] | None = None, default: str = "form"
) -> dict[str, str]:
    """Pydantic errors as ``{field: message}`` (the first message per field), in plain words."""
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        key = (rename or {}).get(loc, loc) or default
        out.setdefault(key, plain_message(err))
    return out


def clinic_errors(exc: ClinicError, default: str = "form") -> dict[str, str]:
    return {exc.field or default: exc.message}
