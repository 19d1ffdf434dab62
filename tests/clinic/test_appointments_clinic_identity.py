"""The clinic's identity, configured once: in the footer of every page, on error pages, at the
public ``GET /api/v1/clinic``; and the favicon."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clinic.core.config import Settings
from conftest import RunningApp, serve

IDENTITY = {
    "clinic_name": "Lakeside Clinic",
    "clinic_address": "1 Lake Road, Springfield",
    "clinic_phone": "+1 555 0100",
    "clinic_emergency_notice": "In an emergency call 911; this service is not for emergencies.",
}


@pytest.fixture
async def lakeside(settings: Settings) -> AsyncIterator[RunningApp]:
    configured = settings.model_copy(update=IDENTITY)
    server, task, url = await serve(configured)
    yield RunningApp(url, configured)
    server.should_exit = True
    await task


def test_the_identity_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key.upper(), value)  # CLINIC_NAME, CLINIC_ADDRESS, ...
    read = Settings(secret_key="x" * 16, var_dir=settings.var_dir)
    assert {key: getattr(read, key) for key in IDENTITY} == IDENTITY
    monkeypatch.setenv("CLINIC_NAME", "")
    with pytest.raises(ValueError, match="clinic_name"):
        Settings(secret_key="x" * 16, var_dir=settings.var_dir)


async def test_the_api_tells_anyone_the_clinics_identity(lakeside: RunningApp) -> None:
    async with lakeside.client() as http:
        r = await http.get("/api/v1/clinic")
    assert r.status_code == 200
    assert r.json() == {
        "name": "Lakeside Clinic",
        "address": "1 Lake Road, Springfield",
        "phone": "+1 555 0100",
        "emergency_notice": "In an emergency call 911; this service is not for emergencies.",
    }


async def test_pages_and_error_pages_show_the_clinic(lakeside: RunningApp) -> None:
    async with lakeside.client() as http:
        for path, status in (("/", 200), ("/login", 200), ("/no/such/page", 404)):
            r = await http.get(path, headers={"accept": "text/html"})
            assert r.status_code == status, path
            footer = r.text[r.text.index('<footer class="bottom"') :]
            assert "Lakeside Clinic" in footer and "1 Lake Road, Springfield" in footer
            assert "+1 555 0100" in footer and "In an emergency call 911" in footer
            assert '<link rel="icon" href="/favicon.ico"' in r.text
            assert "<title>" in r.text and "· Lakeside Clinic</title>" in r.text
        assert "Need help? Call Lakeside Clinic" in r.text  # the 404 page


async def test_the_favicon_is_an_icon(http) -> None:
    r = await http.get("/favicon.ico")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00"  # the ICO header: reserved 0, type 1 (icon)
    assert b"\x89PNG" in r.content


async def test_bluegreen_reads_the_identity_the_clinic_serves(lakeside: RunningApp) -> None:
    # The contract behind "configured once": bluegreen's data plane pages (maintenance,
    # pause) name what the live release answers at [identity] url = "/api/v1/clinic".
    from bluegreen.identity import ask

    who = await ask(lakeside.base_url, "/api/v1/clinic")
    assert who.name == "Lakeside Clinic"
    assert who.contact == "+1 555 0100 · 1 Lake Road, Springfield"
    assert who.emergency == IDENTITY["clinic_emergency_notice"]
