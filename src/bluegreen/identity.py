"""Who runs the app, as the app itself says: ``[identity] url`` is a path each release
answers with JSON (the clinic's ``GET /api/v1/clinic``). bluegreen asks the new release at
its smoke step, through the preview listener, and the data plane's own pages (maintenance,
pause) name what the live release said. So the clinic's identity is configured once, in the
app's settings; ``[identity] name/contact/emergency`` are only the fallback.

The answer is a JSON object with ``name`` and any of ``contact`` (or ``phone`` and
``address``, joined) and ``emergency`` (or ``emergency_notice``); strings only, each at most
:data:`~bluegreen.dataplane.settings.IDENTITY_MAX` characters.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from bluegreen.dataplane.settings import IDENTITY_MAX
from bluegreen.dataplane.table import Identity

MAX_BYTES = 16_384
TIMEOUT = 5.0


class IdentityError(Exception):
    """The release's answer was not a usable identity (the message says why)."""


def parse_identity(data: Any) -> Identity:
    """The identity in a release's JSON answer."""
    if not isinstance(data, dict):
        raise IdentityError("not a JSON object")

    def text(*keys: str) -> str:
        for key in keys:
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise IdentityError(f"{key}: not a string")
            value = value.strip()
            if len(value) > IDENTITY_MAX:
                raise IdentityError(f"{key}: more than {IDENTITY_MAX} characters")
            if value:
                return value
        return ""

    name = text("name")
    if not name:
        raise IdentityError("no name")
    contact = text("contact") or " · ".join(v for v in (text("phone"), text("address")) if v)
    return Identity(name=name, contact=contact, emergency=text("emergency", "emergency_notice"))


async def ask(base_url: str, path: str) -> Identity:
    """Ask the release behind ``base_url`` (the preview listener) who runs it."""
    try:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT, trust_env=False) as client,
            client.stream("GET", path, headers={"Accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise IdentityError(f"GET {path}: {resp.status_code}")
            body = b""
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise IdentityError(f"GET {path}: answer over {MAX_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise IdentityError(f"GET {path}: {type(exc).__name__}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise IdentityError(f"GET {path}: not JSON") from None
    try:
        return parse_identity(data)
    except IdentityError as exc:
        raise IdentityError(f"GET {path}: {exc}") from None
