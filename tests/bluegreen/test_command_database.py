"""A one-off command (``bluegreen lint-migrations``) that starts the shared database for
itself stops it when done, and never stops one a daemon or its instances use."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen import cli

# A database provider in miniature, like `clinic db url --keep-running` / `clinic db stop`:
# `url` starts a server process (left running) unless one runs, and prints its URL;
# `stop` stops it. The server is a real process, found through its pid file.
PROVIDER = """
import os, subprocess, sys, pathlib
pid_file = pathlib.Path(sys.argv[2])
if sys.argv[1] == "url":
    if not pid_file.exists():
        server = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid_file.write_text(str(server.pid))
    print("postgresql://u:pw@127.0.0.1:5432/db")
else:
    if pid_file.exists():
        os.kill(int(pid_file.read_text()), 15)
        pid_file.unlink()
"""
PLAN = '{"current": "a", "head": "a", "history": ["a"], "phases": {}, "revisions": []}'


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "provider.py").write_text(PROVIDER)
    (tmp_path / "plan.py").write_text(f"print({PLAN!r})")
    pid_file = tmp_path / "db.pid"
    (tmp_path / "bluegreen.toml").write_text(
        f"""
[app]
name = "t"
command = "{{python}} app.py --port {{port}}"
[state]
dir = "state"
[database]
url_command = "{{python}} provider.py url {pid_file}"
stop_command = "{{python}} provider.py stop {pid_file}"
env = "DATABASE_URL"
[migrations]
plan = "{{python}} plan.py"
"""
    )
    yield tmp_path
    if pid_file.exists():  # a failed test must not leak the server
        os.kill(int(pid_file.read_text()), signal.SIGTERM)


def lint(project: Path) -> int:
    return cli.main(["--config", str(project / "bluegreen.toml"), "lint-migrations"])


def test_the_database_it_started_is_stopped_when_done(project: Path) -> None:
    assert lint(project) == 0
    # The provider started a server for the command, and the command stopped it.
    assert not (project / "db.pid").exists()


def test_a_database_a_running_daemon_uses_is_left_running(project: Path) -> None:
    (project / "state").mkdir()
    (project / "state" / "daemon.json").write_text(json.dumps({"pid": os.getpid()}))
    assert lint(project) == 0
    server = int((project / "db.pid").read_text())
    assert alive(server)
