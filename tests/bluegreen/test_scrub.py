"""Hook output is scrubbed of known secrets before it is kept, logged or stored."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bluegreen import scrub
from bluegreen.hooks import run_hook
from bluegreen.scrub import MASK, Scrubber
from bluegreen.state import StateStore

SECRET_KEY = "s3cret-signing-key-0123456789"
TOKEN = "admin-token-abcdef0123456789"
DB_PASSWORD = "pg-pass-98765"

# What a migrate hook does: generates the demo password under the app's secrets dir and
# prints it, next to other things an app might print.
HOOK = """
import os, pathlib, secrets
d = pathlib.Path(os.environ["APP_VAR_DIR"]) / "secrets"
d.mkdir(parents=True, exist_ok=True)
pw = secrets.token_urlsafe(12)
(d / "demo-password").write_text(pw)
print("created 7 accounts")
print("demo password:", pw)
print("logging in with", pw, "works")
print("signing with", os.environ["CLINIC_SECRET_KEY"])
print("database at", os.environ["CLINIC_DATABASE_URL"])
print("admin", os.environ.get("BLUEGREEN_ADMIN_TOKEN", "not inherited"), "{token}")
print("migrated to 0003_visits")
"""


@pytest.fixture
def known(monkeypatch: pytest.MonkeyPatch) -> Scrubber:
    """A fresh registry of the daemon's known secrets, for this test only."""
    fresh = Scrubber()
    monkeypatch.setattr(scrub, "KNOWN", fresh)
    return fresh


async def test_a_hook_printing_secrets_is_stored_and_logged_without_them(
    tmp_path: Path, known: Scrubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINIC_SECRET_KEY", SECRET_KEY)
    known.add(TOKEN)  # the daemon registers its (maybe generated) admin token
    known.add_dir(tmp_path / "app" / "secrets")
    logged: list[str] = []
    result = await run_hook(
        [sys.executable, "-c", HOOK.replace("{token}", TOKEN)],
        cwd=tmp_path,
        env={
            "APP_VAR_DIR": str(tmp_path / "app"),
            "CLINIC_DATABASE_URL": f"postgresql://clinic:{DB_PASSWORD}@127.0.0.1:5432/clinic",
        },
        timeout=30,
        log=logged.append,
    )
    assert result.ok, result.output
    demo_password = (tmp_path / "app" / "secrets" / "demo-password").read_text()
    with StateStore(tmp_path / "state.sqlite3") as store:
        deploy = store.begin_deploy("r2", "HEAD")
        store.step_finished(deploy, "migrate", "ok", result.output)
        stored = store.history(1)[0].steps[0].output
    for text in (result.output, "\n".join(logged), stored):
        for secret in (demo_password, SECRET_KEY, DB_PASSWORD, TOKEN):
            assert secret not in text
        # What is not secret is left as it was.
        assert "created 7 accounts" in text and "migrated to 0003_visits" in text
        assert "postgresql://clinic:" + MASK + "@127.0.0.1:5432/clinic" in text
        assert f"logging in with {MASK} works" in text


async def test_a_command_whose_output_is_the_url_is_not_scrubbed(
    tmp_path: Path, known: Scrubber
) -> None:
    url = f"postgresql://clinic:{DB_PASSWORD}@127.0.0.1:5432/clinic"
    lines: list[str] = []
    result = await run_hook(
        [sys.executable, "-c", f"print({url!r})"],
        cwd=tmp_path,
        env={},
        timeout=30,
        log=lines.append,
        scrub=False,
    )
    assert result.ok and lines == [url]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abcdefgh1234 rest", f"token={MASK} rest"),
        ("Password: hunter2hunter2", f"Password: {MASK}"),
        ("redis://:p4ssw0rd-long@host:6379/0", f"redis://:{MASK}@host:6379/0"),
        ("https://example.org/path?q=1", "https://example.org/path?q=1"),
        ("password reset sent", "password reset sent"),
    ],
)
def test_labelled_values_and_url_passwords_are_masked(text: str, expected: str) -> None:
    assert Scrubber()(text) == expected


def test_env_secrets_are_known_by_their_names() -> None:
    s = Scrubber()
    s.add_env({"SMTP_PASSWORD": "mail-pass-1", "TURN_SECRET": "turn-9999", "PATH": "/usr/bin"})
    s.add("short")  # too short to be a secret: masking it would mask ordinary words
    assert s("mail-pass-1 turn-9999 /usr/bin short") == f"{MASK} {MASK} /usr/bin short"
