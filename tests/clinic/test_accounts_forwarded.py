"""X-Forwarded-For is believed only from the configured proxies (default: loopback, where
bluegreen's Envoy runs). From any other peer, a spoofed header is not what the login throttle
counts nor what the audit trail records. Runs a real ``clinic serve`` process: the setting
reaches uvicorn there."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from clinic.accounts.models import LoginThrottle
from clinic.core.audit import AuditRecord
from clinic.core.config import Settings
from conftest import free_port
from factories import make_patient, token_for
from notify_fixtures import eventually

SPOOFED = "203.0.113.66"
UNTRUSTED_PEER = "127.0.0.2"
"""Another loopback address: a peer on this machine that is not the configured proxy."""


def start(settings: Settings, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CLINIC_DATABASE_URL": str(settings.database_url),
        "CLINIC_ENVIRONMENT": "test",
        "CLINIC_SECRET_KEY": settings.secret_key,
        "CLINIC_VAR_DIR": str(tmp_path / "var"),
        "CLINIC_WORKER_IN_PROCESS": "false",
    }
    env.pop("CLINIC_FORWARDED_ALLOW_IPS", None)
    with (tmp_path / "serve.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "clinic", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def served(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """``clinic serve`` with the default CLINIC_FORWARDED_ALLOW_IPS (127.0.0.1)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(settings, tmp_path, port)

    async def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(url + "/version")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await eventually(ready, timeout=60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_from(source: str, base_url: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=20)


async def throttle_keys(sessions) -> set[str]:
    async with sessions() as s:
        return set(await s.scalars(select(LoginThrottle.key)))


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    served, sessions, settings
) -> None:
    patient = await make_patient(sessions, settings)
    wrong = {"email": "nobody@example.org", "password": "wrong-password"}
    spoof = {"X-Forwarded-For": SPOOFED}

    async with client_from(UNTRUSTED_PEER, served) as peer:
        r = await peer.post("/api/v1/auth/login", json=wrong, headers=spoof)
        assert r.status_code == 401
        assert await throttle_keys(sessions) == {
            f"account:nobody@example.org|{UNTRUSTED_PEER}",
            f"address:{UNTRUSTED_PEER}",
        }
        auth = await token_for(peer, patient)
        r = await peer.get(f"/api/v1/patients/{patient.user_id}", headers={**auth, **spoof})
        assert r.status_code == 200
    async with sessions() as s:
        addresses = set(
            await s.scalars(select(AuditRecord.address).where(AuditRecord.action == "read"))
        )
    assert addresses == {UNTRUSTED_PEER}

    # The configured proxy (loopback, as Envoy) is believed: its client's address counts.
    async with client_from("127.0.0.1", served) as proxy:
        r = await proxy.post("/api/v1/auth/login", json=wrong, headers=spoof)
        assert r.status_code == 401
    assert f"address:{SPOOFED}" in await throttle_keys(sessions)
