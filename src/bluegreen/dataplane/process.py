"""The Envoy process: spawned in a session of its own so it outlives whoever started it.

With hot restart enabled Envoy asks the kernel to SIGTERM it when its parent dies
(``PR_SET_PDEATHSIG``: it expects to run under a hot-restarter wrapper). So the daemon
does not parent Envoy itself: a ``/bin/sh`` keeper does, and only waits for it, the way
Envoy's own ``hot-restarter.py`` would. The keeper outlives the daemon; Envoy outlives
the daemon with it.

``os.posix_spawn`` rather than ``subprocess.Popen``: a Popen object that is dropped while
its process runs (the daemon exits and leaves Envoy serving, by design) warns and is
reaped behind our back. Here the pid is all we keep; our own children are reaped with
``waitpid`` when we look at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path


def spawn(argv: list[str], *, log: Path) -> int:
    """Start ``argv`` in a new session, stdin from /dev/null, stdout+stderr appended to
    ``log``; returns its pid."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions, setsid=True)


_KEEPER = 'set -e; "$@" & echo $! > "$0.tmp"; mv "$0.tmp" "$0"; wait $!'


async def spawn_kept(argv: list[str], *, log: Path, pid_file: Path) -> tuple[int, int]:
    """Start ``argv`` under a keeper shell (see the module docs); returns the pids of
    the keeper and of ``argv``'s process."""
    _take_pid(pid_file)
    keeper = spawn(["/bin/sh", "-c", _KEEPER, str(pid_file), *argv], log=log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while (pid := _take_pid(pid_file)) is None:
        if loop.time() >= deadline or not alive(keeper):
            await terminate(keeper)
            raise OSError(f"could not start {argv[0]} (see {log})")
        await asyncio.sleep(0.005)
    return keeper, pid


def _take_pid(pid_file: Path) -> int | None:
    """The pid the keeper wrote (the file is renamed into place whole), then removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    pid_file.unlink(missing_ok=True)
    return pid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X", "")


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` (empty if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (VmRSS), 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def wait_gone(pid: int, timeout: float) -> bool:  # noqa: ASYNC109
    """Wait up to ``timeout`` seconds for ``pid`` to end; whether it did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while alive(pid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def terminate(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once ``pid`` is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if await wait_gone(pid, grace):
            return


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]
