"""Commands bluegreen runs: hooks, commands whose output is data, and the tools it calls.

* every command runs without a shell, in its own process group, with the controller's
  environment minus the admin token (:func:`child_env`) plus what the caller adds;
* :func:`run_hook` streams its combined output line by line, known secrets masked, and
  kills the whole group on timeout; :func:`capture` returns stdout and stderr apart (for
  a plan, a URL);
* :func:`render` is the one way a command template becomes an argv for a release.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bluegreen.config import ADMIN_TOKEN_ENV, Colour, Template
from bluegreen.release import Release
from bluegreen.scrub import scrubber_for

MAX_HOOK_OUTPUT = 64 * 1024
"""Characters of hook output kept (the tail); every line still goes to ``log``."""

KILL_GRACE_SECONDS = 2.0


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Environment for a child process: ours without the admin token, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def render(
    template: Template, release: Release, colour: Colour | None, **extra: object
) -> list[str]:
    """``template``'s argv for ``release`` (deployed to ``colour``): ``{python}``, ``{release}``,
    ``{release_dir}``, ``{colour}`` and the ``extra`` placeholders."""
    values: dict[str, object] = {
        "python": release.python,
        "release": release.id,
        "release_dir": release.dir,
        **extra,
    }
    if colour is not None:
        values["colour"] = colour
    argv: list[str] = template.render(**values)
    return argv


def squawk_executable() -> str:
    """squawk from this environment (the squawk-cli wheel), else from PATH."""
    beside = Path(sys.executable).parent / "squawk"
    return str(beside) if beside.exists() else "squawk"


@dataclass(frozen=True, slots=True)
class HookResult:
    """``ok`` iff the command exited 0 in time; ``output`` is the combined stdout/stderr tail."""

    ok: bool
    exit_code: int | None
    output: str
    timed_out: bool = False


async def kill_group(proc: asyncio.subprocess.Process, *, grace: float) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace`` s; reap ``proc``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    # Members of the group may outlive the leader: always finish them off.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def run_hook(
    command: Sequence[str] | str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the hook's own time limit, enforced here
    log: Callable[[str], None],
    scrub: bool = True,
) -> HookResult:
    """Run ``command`` (a string is split with shlex, never given to a shell).

    ``env`` is added to the controller's environment (minus the admin token). Each output
    line has every known secret masked (:mod:`bluegreen.scrub`) before it is kept or logged;
    ``scrub=False`` only for a command whose output is itself a secret (the database URL).
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        return HookResult(False, None, "empty hook command")
    full_env = child_env(env)
    clean: Callable[[str], str] = scrubber_for(full_env) if scrub else str
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        msg = f"cannot run hook {shlex.join(argv)}: {exc}"
        log(msg)
        return HookResult(False, None, msg)

    chunks: list[str] = []
    size = 0

    def keep(line: str) -> None:
        nonlocal size
        chunks.append(line)
        size += len(line) + 1
        while size > MAX_HOOK_OUTPUT and len(chunks) > 1:
            size -= len(chunks.pop(0)) + 1

    async def pump() -> None:
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            line = clean(raw.decode("utf-8", "replace").rstrip("\r\n"))
            keep(line)
            log(line)

    started = time.monotonic()
    reader = asyncio.create_task(pump())
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(reader), timeout)
        await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None or timed_out:
            await kill_group(proc, grace=KILL_GRACE_SECONDS)
        # Once the group is dead the pipe closes; don't wait forever on a leaked fd.
        try:
            await asyncio.wait_for(reader, KILL_GRACE_SECONDS)
        except TimeoutError:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    if timed_out:
        msg = (
            f"[bluegreen] hook timed out after {timeout:g}s "
            f"(ran {time.monotonic() - started:.1f}s); its process group was killed"
        )
        keep(msg)
        log(msg)
        return HookResult(False, proc.returncode, "\n".join(chunks), timed_out=True)
    rc = proc.returncode
    return HookResult(rc == 0, rc, "\n".join(chunks))


async def capture(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the command's own time limit, enforced here
) -> tuple[int, str, str]:
    """Run ``argv`` (no shell, own process group) and return ``(exit code, stdout, stderr)``:
    for commands whose stdout is data (a plan, a URL). A timeout kills the group: ``-1``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=child_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await kill_group(proc, grace=KILL_GRACE_SECONDS)
        return -1, "", f"timed out after {timeout:g}s: {shlex.join(argv)}"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


HookRunner = Callable[..., Awaitable[HookResult]]
"""The signature of :func:`run_hook` (tests inject fakes)."""
