"""Secrets fail closed: no key in code, a generated one shared through var/, none in production."""

from __future__ import annotations

import json
import stat
from base64 import b64encode
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner
from pydantic import ValidationError

from clinic.core.config import SECRET_KEY_FILE, Settings
from clinic.web.sessions import COOKIE
from conftest import serve
from factories import make_patient

# Every key ever hard-coded in this repository (`git log -p -S secret_key`, `-S SECRET_KEY`,
# `-S DEV_SECRET`): a default start must refuse sessions signed with any of them.
PUBLISHED_KEYS = [
    "dev-only-insecure-secret-change-me",
    "test-secret-key-0123456789abcdef",
    "unused-by-the-factories-0123456789",
    "bench-secret-key-0123456789",
    "not-the-secret-key-123",
]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLINIC_SECRET_KEY", "CLINIC_ENVIRONMENT", "CLINIC_VAR_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_key_env")
def test_without_a_key_one_is_generated_owner_only_and_shared_through_var(tmp_path: Path) -> None:
    var = tmp_path / "var"
    first = Settings(var_dir=var)
    assert len(first.secret_key) >= 32
    key_file = var / "secrets" / SECRET_KEY_FILE
    assert key_file.read_text().strip() == first.secret_key
    assert _mode(key_file) == 0o600
    assert _mode(var / "secrets") == 0o700
    assert _mode(var) == 0o700
    # Another instance on the same var/ signs with the same key; another var/ gets its own.
    assert Settings(var_dir=var).secret_key == first.secret_key
    assert Settings(var_dir=tmp_path / "elsewhere").secret_key != first.secret_key


@pytest.mark.usefixtures("no_key_env")
def test_a_loose_secrets_dir_is_tightened(tmp_path: Path) -> None:
    secrets = tmp_path / "var" / "secrets"
    secrets.mkdir(parents=True)
    secrets.chmod(0o755)
    Settings(var_dir=tmp_path / "var")
    assert _mode(secrets) == 0o700


@pytest.mark.usefixtures("no_key_env")
def test_production_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CLINIC_SECRET_KEY must be set in production"):
        Settings(environment="production", var_dir=tmp_path / "var")
    assert not (tmp_path / "var").exists(), "nothing generated for a refused configuration"


@pytest.mark.usefixtures("no_key_env")
def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="secret_key"):
        Settings(secret_key="short", var_dir=tmp_path / "var")


def _forged_session(key: str, user_id: int) -> str:
    """A session cookie as Starlette's SessionMiddleware signs it."""
    payload = b64encode(json.dumps({"uid": user_id}).encode())
    return TimestampSigner(key).sign(payload).decode()


@pytest.mark.usefixtures("no_key_env")
async def test_cookies_signed_with_any_published_key_are_refused_by_a_default_start(
    db_url: str, tmp_path: Path
) -> None:
    from clinic.core.db import make_engine, make_sessionmaker

    settings = Settings(environment="test", database_url=db_url, var_dir=tmp_path / "var")
    assert settings.secret_key not in PUBLISHED_KEYS
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        patient = await make_patient(make_sessionmaker(engine), settings)
    finally:
        await engine.dispose()
    server, task, url = await serve(settings)
    try:
        import httpx

        async with httpx.AsyncClient(base_url=url, timeout=20.0) as client:
            for key in PUBLISHED_KEYS:
                cookie = _forged_session(key, patient.user_id)
                answer = await client.get("/api/v1/me", headers={"cookie": f"{COOKIE}={cookie}"})
                assert answer.status_code == 401, key
            # The same forgery with the instance's real key works: the refusals above are
            # about the key, not a malformed cookie.
            cookie = _forged_session(settings.secret_key, patient.user_id)
            answer = await client.get("/api/v1/me", headers={"cookie": f"{COOKIE}={cookie}"})
            assert answer.status_code == 200
            assert answer.json()["id"] == patient.user_id
    finally:
        server.should_exit = True
        await task
