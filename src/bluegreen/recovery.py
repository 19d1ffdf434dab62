"""What a starting daemon does with what the last one left: adopt the instances that still
serve, reap every other process of its own, and clean up a deploy that was interrupted.

* an instance is adopted only if the state store names it and its process still runs as that
  instance (pid alive, ``BLUEGREEN_INSTANCE`` and ``BLUEGREEN_HOME`` in its environment) and
  answers ``/version`` with the recorded release; anything else is stopped and forgotten;
* any other process carrying this state dir's ``BLUEGREEN_HOME`` (a hook, a rehearsal
  instance, an instance the store forgot) is killed with its process group: duplicates are
  never left running;
* an interrupted deploy is recorded ``interrupted`` (not cancelled by an operator); the
  migration it may have applied is undone as a failed verify would (``[migrations]
  downgrade`` to the revision before it), its scratch database is dropped, and the candidate
  colour's instances are stopped by the caller (nothing but the live colour is adopted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

import httpx

from bluegreen import processes, rehearsal
from bluegreen.config import Colour
from bluegreen.hooks import render
from bluegreen.release import Release
from bluegreen.state import Deploy, InstanceRecord
from bluegreen.steps.context import ControlPlane
from bluegreen.supervisor import Instance

logger = logging.getLogger(__name__)

KILL_GRACE = 5.0
VERSION_TIMEOUT = 10.0
VERSION_ATTEMPTS = 3


async def _answers_as(rec: InstanceRecord, version_path: str) -> str | None:
    """``None`` if the instance answers ``version_path`` with its recorded release, else why
    not. Patient (a loaded machine answers slowly): a serving instance must not be mistaken
    for a dead one."""
    url = f"http://{rec.host}:{rec.port}{version_path}"
    why = "no answer"
    async with httpx.AsyncClient(timeout=VERSION_TIMEOUT, trust_env=False) as client:
        for attempt in range(VERSION_ATTEMPTS):
            try:
                resp = await client.get(url)
                data = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                why = f"GET {version_path}: {type(exc).__name__}"
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            if resp.status_code != 200 or not isinstance(data, dict):
                return f"GET {version_path}: {resp.status_code}"
            got = data.get("release")
            return None if got == rec.release_id else f"runs release {got}, not {rec.release_id}"
    return why


async def adopt_instances(plane: ControlPlane, colour: Colour | None) -> list[Instance]:
    """Adopt the recorded instances of ``colour`` that still serve as themselves; stop and
    forget every other recorded one (of the other colour, dead, or not answering right)."""
    home = str(plane.config.state.dir)
    app = plane.config.app
    adopted: list[Instance] = []
    for rec in plane.state.instances():
        release = plane.release_from_state(rec.release_id)
        pid = rec.pid
        env = processes.environ(pid) if pid is not None and processes.alive(pid) else {}
        ours = env.get(processes.HOME_ENV) == home and env.get(processes.INSTANCE_ENV) == rec.id
        if pid is None or not ours:
            why: str | None = "its process is gone"
        elif release is None:
            why = f"its release {rec.release_id} is gone from disk"
        elif rec.colour != colour:
            why = f"{rec.colour} is not live"
        else:
            why = await _answers_as(rec, app.version_path)
        if why is None and pid is not None and release is not None:
            adopted.append(
                plane.supervisor.adopt(
                    id=rec.id,
                    colour=rec.colour,
                    release=release,
                    pid=pid,
                    port=rec.port,
                    command_for=_command_for(plane, release, rec.colour),
                    env=plane.environment.for_release(release, rec.colour),
                    cwd=release.dir / app.workdir,
                    live_path=app.live_path,
                    ready_path=app.ready_path,
                )
            )
            logger.info("adopted instance %s (pid %d, port %d)", rec.id, pid, rec.port)
            continue
        if pid is not None and ours:
            logger.warning("stopping instance %s (pid %d): %s", rec.id, pid, why)
            await processes.kill_group(pid, grace=KILL_GRACE)
        else:
            logger.info("forgetting instance %s: %s", rec.id, why)
        plane.state.forget_instance(rec.id)
    return adopted


def _command_for(
    plane: ControlPlane, release: object, colour: Colour
) -> Callable[[int], list[str]]:

    assert isinstance(release, Release)

    def command_for(port: int) -> list[str]:
        return render(plane.config.app.command, release, colour, port=port)

    return command_for


async def reap_strays(plane: ControlPlane, keep: Sequence[Instance]) -> list[int]:
    """Kill every process of this state dir that is not one of ``keep``; their pids."""
    keep_pids = {i.pid for i in keep if i.pid is not None}
    reaped = []
    for pid, env in processes.marked(plane.config.state.dir).items():
        if pid in keep_pids:
            continue
        what = env.get(processes.INSTANCE_ENV, "a hook")
        logger.warning("reaping pid %d (%s): no longer known to the state store", pid, what)
        await processes.kill_group(pid, grace=KILL_GRACE)
        reaped.append(pid)
    return reaped


def served_users(steps: Mapping[str, str]) -> bool:
    """Whether an interrupted deploy's new colour answered users: it was switched to, or a
    phased switch had begun sending it sessions. Then users may have written through the new
    schema, and its migration stays, as after a rollback: undoing it could lose their data."""
    return steps.get("switch") == "ok" or steps.get("phases") in ("running", "ok", "failed")


async def recover_interrupted(plane: ControlPlane, deploy: Deploy) -> list[str]:
    """Undo what the interrupted ``deploy`` left behind (before any user reached its colour):
    its migration (as a failed verify would) and its scratch database. What was done, line
    by line."""
    notes: list[str] = []
    steps = {s.name: s.status for s in deploy.steps}
    release = plane.release_from_state(deploy.release_id)
    live = plane.state.current().live_colour
    colour: Colour = "green" if live == "blue" else "blue"
    mig = plane.config.migrations
    migrate_from = plane.state.migrate_from(deploy.id)
    if migrate_from is not None and served_users(steps):
        notes.append("its migration stays: users were served by the new colour")
    elif release is not None and migrate_from is not None:
        if mig is None or mig.downgrade is None:
            notes.append("its migration may be applied: no [migrations] downgrade to undo it")
        else:
            target = migrate_from or "base"
            result = await plane.hook_runner(
                render(mig.downgrade, release, colour, revision=target),
                cwd=release.dir,
                env=plane.hook_env(release, colour),
                timeout=plane.config.timeouts.hook,
                log=lambda line: logger.info("[recover downgrade] %s", line),
            )
            notes.append(
                f"migration undone: downgrade to {target} {'ok' if result.ok else 'FAILED'}"
            )
    scratch = plane.state.scratch(deploy.id)
    if scratch is not None and release is not None:
        dropped = await rehearsal.drop_scratch(
            config=plane.config,
            release=release,
            colour=colour,
            env=plane.hook_env(release, colour),
            url=scratch,
        )
        if dropped:
            plane.state.set_scratch(deploy.id, None)
        notes.append(f"scratch database {'dropped' if dropped else 'NOT dropped'}")
    return notes
