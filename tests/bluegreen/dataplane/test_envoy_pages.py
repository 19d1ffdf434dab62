"""The data plane's own pages through a real Envoy: maintenance and pause answer a browser
with an HTML page naming the clinic, its contact and emergency advice, and an API client
with JSON; both 503 with Retry-After."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    TEST_SETTINGS,
    StartEnvoy,
    StartUpstream,
    envoy_factory,
    http,
    table,
    upstream,
)

from bluegreen.config import ConfigError
from bluegreen.dataplane.settings import parse_settings
from bluegreen.dataplane.table import Identity

IDENTITY = replace(
    TEST_SETTINGS,
    identity_name="Praxis <Weber> & Rossi",
    identity_contact="Tel. +49 30 1234567",
    identity_emergency="In an emergency call 112.",
)
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.mark.parametrize(
    ("mode", "title", "error"),
    [
        ("maintenance", "Down for maintenance", "maintenance"),
        ("paused", "Back in a moment", "paused"),
    ],
)
async def test_a_browser_gets_the_clinics_page_an_api_client_gets_json(
    envoy_factory: StartEnvoy,
    upstream: StartUpstream,
    http: aiohttp.ClientSession,
    mode: str,
    title: str,
    error: str,
) -> None:
    envoy = await envoy_factory(settings=IDENTITY)
    b1 = await upstream("b1", "blue")
    await envoy.apply(table(b1, live="blue").with_mode(mode))  # type: ignore[arg-type]
    public = envoy.urls()["public"]
    async with http.get(public + "/appointments", headers=BROWSER) as resp:
        page = await resp.text()
        assert resp.status == 503 and resp.headers["Retry-After"] == "3"
        assert resp.headers["Content-Type"].startswith("text/html")
    assert f"<h1>{title}</h1>" in page
    assert "Praxis &lt;Weber&gt; &amp; Rossi" in page  # escaped, never raw markup
    assert "Tel. +49 30 1234567" in page and "In an emergency call 112." in page
    # A script under /api/ (whatever it accepts), or any client not asking for HTML: JSON.
    for path, headers in (("/api/v1/doctors", BROWSER), ("/appointments", {})):
        async with http.get(public + path, headers=headers) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "3"
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["error"] == error


async def test_the_pages_name_what_the_live_release_said(
    envoy_factory: StartEnvoy,
    upstream: StartUpstream,
    http: aiohttp.ClientSession,
) -> None:
    # [identity] url: each release says who runs it; the pages follow the live colour, and
    # fall back to [identity]'s values for a colour that said nothing.
    envoy = await envoy_factory(settings=IDENTITY)
    b1, g1 = await upstream("b1", "blue"), await upstream("g1", "green")
    told = Identity("Lakeside <Clinic>", "+1 555 0100", "Call 911.")
    t = table(b1, g1, live="blue").with_identity("blue", told).with_mode("maintenance")
    public = envoy.urls()["public"]
    await envoy.apply(t)
    async with http.get(public + "/", headers=BROWSER) as resp:
        page = await resp.text()
    assert "Lakeside &lt;Clinic&gt;" in page and "+1 555 0100" in page and "Call 911." in page
    assert "Praxis" not in page
    await envoy.apply(t.with_live("green"))
    async with http.get(public + "/", headers=BROWSER) as resp:
        page = await resp.text()
    assert "Praxis &lt;Weber&gt; &amp; Rossi" in page and "Lakeside" not in page
    # Forgotten when a colour's next release cannot say.
    assert t.with_identity("blue", None).identity_of("blue") is None


def test_identity_is_read_from_its_table_and_checked() -> None:
    s = parse_settings(
        {"identity": {"name": "Clinic", "contact": "Tel. 1", "emergency": "Call 112"}},
        base_dir=Path("/"),
    )
    assert (s.identity_name, s.identity_contact, s.identity_emergency) == (
        "Clinic",
        "Tel. 1",
        "Call 112",
    )
    with pytest.raises(ConfigError, match=r"identity\.phone: unknown key"):
        parse_settings({"identity": {"phone": "1"}}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match=r"identity\.name: at most 500"):
        parse_settings({"identity": {"name": "x" * 501}}, base_dir=Path("/"))
    assert parse_settings({"identity": {"url": "/api/v1/clinic"}}, base_dir=Path("/")).identity_url
    for bad in ("http://evil.example/x", "//evil.example/x", "api", "/a b", "/a\x00"):
        with pytest.raises(ConfigError, match=r"identity\.url: a path on the app"):
            parse_settings({"identity": {"url": bad}}, base_dir=Path("/"))


def test_the_repositorys_config_asks_the_clinic_who_it_is() -> None:
    # Configured once: the clinic's settings, read from each release (the contract is
    # tested against the real app in tests/clinic/test_appointments_clinic_identity.py).
    from bluegreen.config import load_config

    repo = Path(__file__).resolve().parents[3]
    s = load_config(repo / "bluegreen.toml", environ={}).dataplane
    assert s.identity_url == "/api/v1/clinic"
    assert not (s.identity_name or s.identity_contact or s.identity_emergency)
