"""What a release says about who runs it (``[identity] url``): parsed strictly, and a
release that cannot say is named, never a crash or a hang."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bluegreen.identity import IdentityError, ask, parse_identity


def test_the_clinics_shape_and_the_plain_shape() -> None:
    clinic = parse_identity(
        {"name": " Riverside ", "phone": "+49 1", "address": "Street 1", "emergency_notice": "112"}
    )
    assert (clinic.name, clinic.contact, clinic.emergency) == (
        "Riverside",
        "+49 1 · Street 1",
        "112",
    )
    plain = parse_identity({"name": "X", "contact": "mail@x", "emergency": "call 911"})
    assert (plain.contact, plain.emergency) == ("mail@x", "call 911")
    assert parse_identity({"name": "X"}).contact == ""


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([], "not a JSON object"),
        ({}, "no name"),
        ({"name": "  "}, "no name"),
        ({"name": 5}, "name: not a string"),
        ({"name": "X", "phone": ["1"]}, "phone: not a string"),
        ({"name": "x" * 501}, "name: more than 500 characters"),
    ],
)
def test_a_bad_answer_is_named(data: object, why: str) -> None:
    with pytest.raises(IdentityError, match=why):
        parse_identity(data)


@pytest.fixture
async def release() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"name": "Lakeside", "phone": "1"})

    async def huge(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"name": "' + b"x" * 100_000 + b'"}')

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>", content_type="text/html")

    async def fails(_: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/huge", huge)
    app.router.add_get("/html", html)
    app.router.add_get("/fails", fails)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_asking_a_release(release: str) -> None:
    assert (await ask(release, "/ok")).name == "Lakeside"
    for path, why in (
        ("/fails", "GET /fails: 500"),
        ("/missing", "GET /missing: 404"),
        ("/html", "GET /html: not JSON"),
        ("/huge", "GET /huge: answer over 16384 bytes"),
    ):
        with pytest.raises(IdentityError, match=why):
            await ask(release, path)
    with pytest.raises(IdentityError, match="ConnectError"):
        await ask("http://127.0.0.1:9", "/ok")
