"""HTTPS at the edge: a generated certificate, rotation without restart, redirect."""

# ruff: noqa: F811  (pytest fixtures imported from dataplane_fixtures)

from __future__ import annotations

import asyncio
import ssl
import stat
from dataclasses import replace
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from dataplane_fixtures import (  # noqa: F401 (fixtures)
    TEST_SETTINGS,
    StartEnvoy,
    StartUpstream,
    envoy,
    envoy_factory,
    eventually,
    http,
    table,
    upstream,
)

from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.files import write_atomic
from bluegreen.dataplane.tls import self_signed


async def served_cert(port: int) -> bytes:
    """The DER certificate Envoy presents on ``port``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


async def test_https_with_a_generated_certificate(
    envoy: Envoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    await envoy.apply(table(await upstream("b1", "blue")))
    cert = envoy.layout.tls / "cert.pem"
    key = envoy.layout.tls / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o600
    ctx = ssl.create_default_context(cafile=str(cert))  # verifies chain and 127.0.0.1
    async with http.get(envoy.urls()["https"] + "/echo", ssl=ctx) as r:
        assert r.status == 200
        seen = await r.json()
    assert seen["served_by"] == "b1"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert envoy.https_port is not None
    assert await served_cert(envoy.https_port) == der(cert.read_bytes())
    async with http.ws_connect(envoy.urls()["https"] + "/ws", ssl=ctx) as ws:  # wss:// too
        assert await ws.receive_str() == "hello from b1"
        await ws.send_str("over tls")
        assert await ws.receive_str() == "b1:over tls"


async def test_replacing_the_certificate_files_rotates_without_a_restart(
    envoy_factory: StartEnvoy, upstream: StartUpstream, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = certs / "site.crt", certs / "site.key"
    old_cert, old_key = self_signed()
    write_atomic(cert, old_cert)
    write_atomic(key, old_key)
    envoy = await envoy_factory(replace(TEST_SETTINGS, tls_cert=cert, tls_key=key))
    await envoy.apply(table(await upstream("b1", "blue")))
    port, pid = envoy.https_port, envoy.pid
    assert port is not None
    assert await served_cert(port) == der(old_cert)

    new_cert, new_key = self_signed()
    write_atomic(key, new_key)  # what an operator (or certbot's deploy hook) does
    write_atomic(cert, new_cert)

    async def rotated() -> bool:
        return await served_cert(port) == der(new_cert)

    await eventually(rotated)
    assert envoy.pid == pid


async def test_plain_http_can_redirect_to_https(
    envoy_factory: StartEnvoy, upstream: StartUpstream, http: aiohttp.ClientSession
) -> None:
    envoy = await envoy_factory(replace(TEST_SETTINGS, redirect_http_to_https=True))
    await envoy.apply(table(await upstream("b1", "blue")))
    async with http.get(envoy.urls()["public"] + "/echo?a=1", allow_redirects=False) as r:
        assert r.status == 301
        assert r.headers["Location"] == f"https://127.0.0.1:{envoy.https_port}/echo?a=1"
