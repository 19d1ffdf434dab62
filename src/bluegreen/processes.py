"""Processes that outlive the daemon: app instances spawned in sessions of their own, found
again by a later daemon.

``os.posix_spawnp`` rather than ``subprocess``/``asyncio`` subprocesses: those objects warn
when dropped while their process runs (the daemon exits and leaves the instances serving, by
design) and reap behind our back. Here the pid is all we keep. Output goes straight to a log
file (appended), never through a pipe to the daemon, so an instance does not notice the daemon
dying. Every process bluegreen starts for an app carries ``BLUEGREEN_HOME`` (the state dir) in
its environment: :func:`marked` finds them again, to adopt them or to reap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

HOME_ENV = "BLUEGREEN_HOME"
INSTANCE_ENV = "BLUEGREEN_INSTANCE"
POLL = 0.05


def spawn(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> int:
    """Start ``argv`` in ``cwd`` in a new session, stdin from /dev/null, stdout and stderr
    appended to ``log`` (mode 0600); its pid. Raises ``OSError`` if it cannot start."""
    program = argv[0] if "/" not in argv[0] else str(cwd / argv[0])
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(f"{argv[0]}: no such executable (PATH and {cwd} searched)")
    env_tool = shutil.which("env") or "/usr/bin/env"
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # `env -C DIR` changes directory, then execs the command (posix_spawn has no cwd).
    full = [env_tool, "-C", str(cwd), *argv]
    return os.posix_spawn(env_tool, full, dict(env), file_actions=actions, setsid=True)


def reap(pid: int) -> int | None:
    """If ``pid`` is our child and has exited: reap it and return its exit code (negative:
    killed by that signal); otherwise ``None``."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done == pid else None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited child of ours is reaped and counts as gone)."""
    reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X", "")


async def wait(pid: int) -> int | None:
    """Until ``pid`` ends; its exit code when it was our child, else ``None``."""
    while True:
        code = reap(pid)
        if code is not None:
            return code
        if not alive(pid):
            return None
        await asyncio.sleep(POLL)


async def kill_group(pid: int, *, grace: float) -> None:
    """SIGTERM ``pid``'s process group, SIGKILL it after ``grace`` seconds; returns once
    ``pid`` is gone (group members that outlive the leader are killed too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait(pid), grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    await wait(pid)


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with (empty if unreadable or gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def marked(home: Path) -> dict[int, dict[str, str]]:
    """Every running process started by bluegreen for the state dir ``home`` (instances,
    hooks, rehearsal instances), by pid, with its environment."""
    found: dict[int, dict[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        env = environ(pid)
        if env.get(HOME_ENV) == str(home) and alive(pid):
            found[pid] = env
    return found


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]
