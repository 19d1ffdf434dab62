"""The command line, run as a user would: the embedded database path and the external one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from clinic.cli import main
from conftest import free_port


def _env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINIC_")}
    return {**env, "CLINIC_VAR_DIR": str(var_dir), **extra}


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "clinic serve exited early"
        try:
            r = httpx.get(f"{base}/healthz/ready", timeout=1)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("not ready in time")


def _serve(var_dir: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clinic", "serve", "--port", str(port), *args],
        env=_env(var_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_serve_without_url_uses_embedded_postgres_and_keeps_data(tmp_path: Path) -> None:
    var = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(var, port, "--demo")
    try:
        _wait_ready(base, proc)
        doctors = httpx.get(f"{base}/api/v1/doctors").json()
        assert len(doctors) >= 5 and all(d["next_free_slot"] for d in doctors)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert (var / "pgdata" / "PG_VERSION").exists()
    assert "demo accounts" in out
    # The embedded server stops with the process, and the data is there on the next start.
    assert not (var / "pgdata" / "postmaster.pid").exists()
    proc = _serve(var, port)
    try:
        _wait_ready(base, proc)
        assert len(httpx.get(f"{base}/api/v1/doctors").json()) == len(doctors)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_db_url_keep_running_then_stop(tmp_path: Path) -> None:
    var = tmp_path / "var"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "clinic", *a], env=_env(var), capture_output=True, text=True
    )
    url = run("db", "url", "--keep-running")
    assert url.returncode == 0 and url.stdout.startswith("postgresql://"), url.stderr
    upgraded = run("db", "upgrade", "--seed-smoke")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "seeded (2 accounts created)" in upgraded.stdout
    # Still running after the commands that attached to it exited.
    assert (var / "pgdata" / "postmaster.pid").exists()
    again = run("db", "upgrade", "--seed-smoke")
    assert "(0 accounts created)" in again.stdout
    demo = subprocess.run(
        [sys.executable, "-m", "clinic", "db", "upgrade"],
        env={**_env(var), "CLINIC_SEED_DEMO": "1"},
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr
    assert "seeded (9 accounts created)" in demo.stdout and "password:" in demo.stdout
    assert (var / "secrets" / "demo-password").stat().st_mode & 0o077 == 0
    stopped = run("db", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (var / "pgdata" / "postmaster.pid").exists()


def test_bad_configuration_exits_2_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLINIC_ENVIRONMENT", "production")
    monkeypatch.delenv("CLINIC_SECRET_KEY", raising=False)
    assert main(["db", "url"]) == 2
    assert "CLINIC_SECRET_KEY must be set in production" in capsys.readouterr().err
    monkeypatch.setenv("CLINIC_ENVIRONMENT", "development")
    monkeypatch.setenv("CLINIC_LOGIN_MAX_FAILURES", "zero")
    assert main(["db", "url"]) == 2
    assert "CLINIC_LOGIN_MAX_FAILURES" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2


def test_create_admin_with_external_database(db_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path, CLINIC_DATABASE_URL=db_url)
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinic",
            "create-admin",
            "--email",
            "boss@example.org",
            "--name",
            "Boss",
            "--password-stdin",
        ],
        input="a long and unusual passphrase\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    dup = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinic",
            "create-admin",
            "--email",
            "BOSS@example.org",
            "--password-stdin",
        ],
        input="a long and unusual passphrase\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert dup.returncode == 1 and "already exists" in dup.stderr
    weak = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinic",
            "create-admin",
            "--email",
            "x@example.org",
            "--password-stdin",
        ],
        input="password\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert weak.returncode == 1 and "at least" in weak.stderr
