"""``clinic create-admin`` without a terminal (a script, CI, a container) explains itself:
exit 2 naming --password-stdin, no GetPassWarning, nothing read from stdin as a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINIC_")}
    env["CLINIC_VAR_DIR"] = str(tmp_path / "var")
    env["PYTHONWARNINGS"] = "default"  # a warning would show on stderr
    return subprocess.run(
        [sys.executable, "-m", "clinic", "create-admin", *args],
        input="typed into a pipe\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args", [["--email", "boss@example.org"], [], ["--password-stdin"]], ids=str
)
def test_without_a_terminal_it_explains_and_exits_2(args: list[str], tmp_path: Path) -> None:
    done = run(args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--password-stdin" in done.stderr and "--email" in done.stderr
    assert "Warning" not in done.stderr
    assert "created" not in done.stdout
